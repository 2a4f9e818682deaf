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

package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/dynamicmemory/kube-dynamic-memory/local/sysfssim"
)

// newSysfsSimCommand serves a real node's simulated host memory (sysfssim) until
// stopped; the local cluster starts it for each real node.
func newSysfsSimCommand() *cobra.Command {
	var mount, blockSize string
	var regions []string
	cmd := &cobra.Command{
		Use:    "sysfs-sim --mount DIR --region regionN=START:SIZE:NUMA ...",
		Short:  "Serve a simulated sysfs memory-block tree over FUSE for a real node's agent (started by the local cluster; needs root)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := sysfsSimConfig(blockSize, regions)
			if err != nil {
				return err
			}
			if mount == "" {
				return fmt.Errorf("--mount is required: the directory to serve the tree at")
			}
			server, err := sysfssim.Mount(mount, cfg)
			if err != nil {
				return fmt.Errorf("mount the simulated sysfs at %s: %w", mount, err)
			}
			if err := server.WaitMount(); err != nil {
				return err
			}
			<-cmd.Context().Done()
			return server.Unmount()
		},
	}
	cmd.Flags().StringVar(&mount, "mount", "", "directory to serve the tree at (it holds sys/)")
	cmd.Flags().StringVar(&blockSize, "block-size", "128Mi", "memory block size")
	cmd.Flags().StringArrayVar(&regions, "region", nil, "a CXL region: regionN=START:SIZE:NUMA-NODE, addresses in bytes (0x... allowed) (repeatable)")
	return cmd
}

func sysfsSimConfig(blockSize string, regions []string) (sysfssim.Config, error) {
	bs, err := resource.ParseQuantity(blockSize)
	if err != nil {
		return sysfssim.Config{}, fmt.Errorf("--block-size=%q: %w", blockSize, err)
	}
	cfg := sysfssim.Config{BlockSize: bs.Value()}
	for _, r := range regions {
		name, spec, _ := strings.Cut(r, "=")
		parts := strings.Split(spec, ":")
		if len(parts) != 3 {
			return sysfssim.Config{}, fmt.Errorf("--region=%q: want regionN=START:SIZE:NUMA-NODE", r)
		}
		var v [3]int64
		for i, p := range parts {
			if v[i], err = strconv.ParseInt(p, 0, 64); err != nil {
				return sysfssim.Config{}, fmt.Errorf("--region=%q: %q is not a number", r, p)
			}
		}
		cfg.Regions = append(cfg.Regions, sysfssim.Region{Name: name, Start: v[0], Size: v[1], NUMANode: int(v[2])})
	}
	return cfg, cfg.Validate()
}
