/*
Copyright The kube-dynamic-memory Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/dynamicmemory/kube-dynamic-memory/api/dra"
)

// CDI: each prepared claim gets one CDI spec file with one device named after the
// claim UID (never reused, so runtimes cannot hit a stale cache), whose container
// edits tell the workload how much pool memory it has and where.
const (
	cdiVendorClass = dra.DriverName + "/memory"

	// EnvBytes is the pool memory given to the claim, in bytes.
	EnvBytes = "DYNAMIC_MEMORY_BYTES"
	// EnvNUMANodes lists the NUMA nodes the memory is in, comma separated.
	EnvNUMANodes = "DYNAMIC_MEMORY_NUMA_NODES"
)

// CDI writes and removes the per-claim CDI spec files in Dir.
type CDI struct {
	Dir string
}

func (c CDI) file(claimUID string) string {
	return filepath.Join(c.Dir, fmt.Sprintf("%s-%s.json", strings.ReplaceAll(cdiVendorClass, "/", "_"), claimUID))
}

// DeviceID is the fully qualified CDI device name of a claim.
func (c CDI) DeviceID(claimUID string) string { return cdiVendorClass + "=" + claimUID }

// Write creates or replaces the claim's spec file atomically.
func (c CDI) Write(claimUID string, bytes int64, numaNodes []int32) error {
	nodes := make([]string, 0, len(numaNodes))
	for _, n := range numaNodes {
		nodes = append(nodes, strconv.Itoa(int(n)))
	}
	spec := cdispec.Spec{
		Kind: cdiVendorClass,
		Devices: []cdispec.Device{{
			Name: claimUID,
			ContainerEdits: cdispec.ContainerEdits{Env: []string{
				EnvBytes + "=" + strconv.FormatInt(bytes, 10),
				EnvNUMANodes + "=" + strings.Join(nodes, ","),
			}},
		}},
	}
	// The oldest version that allows what the spec holds, so that older runtimes
	// read it too: a device name (the claim UID) that starts with a digit needs
	// 0.5.0, and a runtime refuses a spec that claims less than it needs.
	version, err := cdispec.MinimumRequiredVersion(&spec)
	if err != nil {
		return fmt.Errorf("CDI spec version: %w", err)
	}
	spec.Version = version
	data, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode CDI spec: %w", err)
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return fmt.Errorf("create CDI directory: %w", err)
	}
	tmp, err := os.CreateTemp(c.Dir, ".tmp-"+claimUID+"-*")
	if err != nil {
		return fmt.Errorf("write CDI spec: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write CDI spec: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write CDI spec: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("write CDI spec: %w", err)
	}
	if err := os.Rename(tmp.Name(), c.file(claimUID)); err != nil {
		return fmt.Errorf("write CDI spec: %w", err)
	}
	return nil
}

// Remove deletes the claim's spec file; a missing file is fine.
func (c CDI) Remove(claimUID string) error {
	if err := os.Remove(c.file(claimUID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove CDI spec: %w", err)
	}
	return nil
}
