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

package hostmem

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	testingclock "k8s.io/utils/clock/testing"
)

// fakeKernel is a sysfs tree in a temp dir that answers writes like the kernel:
// writing online/online_movable/offline to memoryN/state makes it read online or
// offline, and queued errors (EBUSY, EINVAL) are returned instead of a write.
type fakeKernel struct {
	DirFS
	t *testing.T

	mu     sync.Mutex
	fail   map[string][]error // path → errors (nil: success) for the next writes, then success
	always map[string]error   // path → error for every write
	writes []string           // "path=data"
	// onBind runs when a DAX device is bound to a driver, like the kmem driver
	// hot-adding the device's memory.
	onBind func(driver, device string)
}

const fakeBlockSize = 128 << 20

// newFakeKernel makes a tree with the given memory blocks offline on NUMA node 0.
func newFakeKernel(t *testing.T, blockSize int64, blocks ...int) *fakeKernel {
	t.Helper()
	k := &fakeKernel{DirFS: DirFS{Root: t.TempDir()}, t: t, fail: map[string][]error{}, always: map[string]error{}}
	k.file(blockSizeFile, fmt.Sprintf("%x\n", blockSize))
	for _, n := range blocks {
		k.addBlock(n, stateOffline, 0)
	}
	return k
}

func (k *fakeKernel) file(name, content string) {
	k.t.Helper()
	p := k.path(name)
	require.NoError(k.t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(k.t, os.WriteFile(p, []byte(content), 0o644))
}

func (k *fakeKernel) addBlock(n int, state string, node int) {
	dir := blockDir(n)
	k.file(dir+"/state", state+"\n")
	k.file(dir+"/valid_zones", "Movable Normal\n")
	k.file(dir+"/removable", "1\n")
	k.file(dir+"/phys_index", fmt.Sprintf("%08x\n", n))
	require.NoError(k.t, os.MkdirAll(k.path(fmt.Sprintf("%s/node%d", dir, node)), 0o755))
}

func (k *fakeKernel) state(n int) string {
	data, err := os.ReadFile(k.path(blockDir(n) + "/state"))
	require.NoError(k.t, err)
	return strings.TrimSpace(string(data))
}

func (k *fakeKernel) failWrites(name string, errs ...error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fail[name] = append(k.fail[name], errs...)
}

func (k *fakeKernel) failAlways(name string, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.always[name] = err
}

func (k *fakeKernel) written() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.writes...)
}

func (k *fakeKernel) WriteFile(name string, data []byte) error {
	k.mu.Lock()
	k.writes = append(k.writes, name+"="+string(data))
	if err := k.always[name]; err != nil {
		k.mu.Unlock()
		return &os.PathError{Op: "write", Path: name, Err: err}
	}
	if errs := k.fail[name]; len(errs) > 0 {
		k.fail[name] = errs[1:]
		if errs[0] != nil { // nil: this write succeeds
			k.mu.Unlock()
			return &os.PathError{Op: "write", Path: name, Err: errs[0]}
		}
	}
	k.mu.Unlock()
	if driver, attr, ok := strings.Cut(strings.TrimPrefix(name, daxDriversDir+"/"), "/"); ok && name != strings.TrimPrefix(name, daxDriversDir+"/") {
		return k.driverWrite(driver, attr, string(data))
	}
	if strings.HasSuffix(name, "/state") {
		switch string(data) {
		case stateOnline, stateOnlineMovable, "online_kernel":
			data = []byte(stateOnline + "\n")
		case stateOffline:
			data = []byte(stateOffline + "\n")
		default:
			return &os.PathError{Op: "write", Path: name, Err: syscall.EINVAL}
		}
	}
	return k.DirFS.WriteFile(name, data)
}

// runWithClock runs f while stepping the fake clock whenever f waits on it, and
// returns f's error. step is how far each wait is advanced.
func runWithClock(t *testing.T, clk *testingclock.FakeClock, step time.Duration, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-done:
			return err
		default:
		}
		if clk.HasWaiters() {
			clk.Step(step)
		}
		if time.Now().After(deadline) {
			t.Fatal("operation did not finish within 20s of real time")
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// addCXLRegion adds a CXL region as the kernel shows it: resource and size printed
// "%#llx" (all ones and 0 for a region that has no address space yet), and its mode.
func (k *fakeKernel) addCXLRegion(name string, start, size int64, mode string) {
	dir := cxlDevicesDir + "/" + name
	if size == 0 {
		k.file(dir+"/resource", "0xffffffffffffffff\n")
	} else {
		k.file(dir+"/resource", fmt.Sprintf("%#x\n", start))
	}
	k.file(dir+"/size", fmt.Sprintf("%#x\n", size))
	k.file(dir+"/mode", mode+"\n")
	k.file(dir+"/interleave_ways", "1\n")
}

// addDAXDevice adds a DAX device over [start, start+size) bound to driver.
func (k *fakeKernel) addDAXDevice(name string, start, size int64, driver string) {
	dir := daxDevicesDir + "/" + name
	k.file(dir+"/resource", fmt.Sprintf("%#x\n", start))
	k.file(dir+"/size", fmt.Sprintf("%d\n", size))
	k.file(dir+"/target_node", "1\n")
	for _, d := range []string{driverDevDAX, driverKmem} {
		for _, attr := range []string{"bind", "unbind", "new_id"} {
			k.file(daxDriversDir+"/"+d+"/"+attr, "")
		}
	}
	k.link(name, driver)
}

func (k *fakeKernel) link(device, driver string) {
	link := k.path(daxDevicesDir + "/" + device + "/driver")
	_ = os.Remove(link)
	if driver != "" {
		require.NoError(k.t, os.Symlink("../../../../bus/dax/drivers/"+driver, link))
	}
}

func (k *fakeKernel) driverOf(device string) string {
	target, err := os.Readlink(k.path(daxDevicesDir + "/" + device + "/driver"))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

// driverWrite binds and unbinds like the DAX bus: new_id and bind attach the
// device to the driver, unbind detaches it.
func (k *fakeKernel) driverWrite(driver, attr, device string) error {
	switch attr {
	case "unbind":
		if k.driverOf(device) != driver {
			return &os.PathError{Op: "write", Path: attr, Err: syscall.ENODEV}
		}
		k.link(device, "")
	case "bind", "new_id":
		if current := k.driverOf(device); current != "" {
			if current == driver && attr == "new_id" {
				return nil
			}
			return &os.PathError{Op: "write", Path: attr, Err: syscall.EBUSY}
		}
		k.link(device, driver)
		if k.onBind != nil {
			k.onBind(driver, device)
		}
	}
	return nil
}
