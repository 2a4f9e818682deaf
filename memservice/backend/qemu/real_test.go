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

package qemu_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/qemu"
)

// startRealQEMU starts QEMU 10 from the Debian 13 root in $QEMU_ROOT (prepared by
// `make qemu-root`) with a CXL Dynamic Capacity Device, paused and without a guest,
// and returns its QMP socket as seen from here. It skips when that cannot be done.
func startRealQEMU(t *testing.T) string {
	t.Helper()
	root := os.Getenv("QEMU_ROOT")
	switch {
	case os.Geteuid() != 0:
		t.Skip("real QEMU test needs root (it runs QEMU in a chroot): run the tests as root")
	case root == "":
		t.Skip("real QEMU test needs QEMU_ROOT, a Debian 13 root with qemu-system-x86: run `make qemu-root` as root (make test sets QEMU_ROOT)")
	}
	if _, err := os.Stat(filepath.Join(root, ".qemu-root-ready")); err != nil {
		t.Skipf("real QEMU test: %s is not a prepared root (no .qemu-root-ready): run `make qemu-root` as root", root)
	}

	mount := func(src, dst, fstype string, flags uintptr) {
		require.NoError(t, syscall.Mount(src, dst, fstype, flags, ""), "mount %s on %s", src, dst)
		t.Cleanup(func() {
			if err := syscall.Unmount(dst, syscall.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", dst, err)
			}
		})
	}
	mount("proc", filepath.Join(root, "proc"), "proc", 0)
	mount("/dev", filepath.Join(root, "dev"), "", syscall.MS_BIND|syscall.MS_REC)

	inside := fmt.Sprintf("/run/qmp-test-%d.sock", os.Getpid())
	socket := filepath.Join(root, inside)
	_ = os.Remove(socket)
	require.NoError(t, os.MkdirAll(filepath.Dir(socket), 0o755))
	cmd := exec.Command("chroot", root, "qemu-system-x86_64",
		"-M", "q35,cxl=on", "-m", "2G,maxmem=8G,slots=8", "-smp", "1", "-display", "none", "-S", "-nodefaults",
		"-object", "memory-backend-ram,id=dhmem0,share=on,size=2G",
		"-device", "pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1",
		"-device", "cxl-rp,port=0,bus=cxl.1,id=root_port13,chassis=0,slot=2",
		"-device", "cxl-type3,bus=root_port13,volatile-dc-memdev=dhmem0,id=cxl-dcd0,num-dc-regions=2",
		"-M", "cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G",
		"-qmp", "unix:"+inside+",server=on,wait=off",
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		_ = os.Remove(socket)
	})
	deadline := time.After(30 * time.Second)
	for {
		if _, err := os.Stat(socket); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("QEMU exited before its QMP socket appeared: %v\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("QEMU's QMP socket %s did not appear within 30s\n%s", socket, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Logf("QEMU started in %s", time.Since(start).Round(time.Millisecond))
	return socket
}

func TestRealQEMUDynamicCapacity(t *testing.T) {
	socket := startRealQEMU(t)
	b, err := qemu.New(qemu.Config{SocketPath: socket, Capacity: 1 << 30, BlockSize: 128 * mi, Timeout: 10 * time.Second})
	require.NoError(t, err)
	defer b.Close()
	ctx := context.Background()

	timed := func(name string, fn func() error) error {
		start := time.Now()
		err := fn()
		t.Logf("%s: %s (err: %v)", name, time.Since(start).Round(time.Microsecond), err)
		return err
	}

	var version string
	require.NoError(t, timed("connect + query-version", func() error {
		version, err = b.Version(ctx)
		return err
	}))
	t.Logf("QEMU %s", version)
	_, err = b.Check(ctx)
	require.NoError(t, err, "Check refuses QEMU older than 9.1")

	require.NoError(t, timed("add 128Mi at offset 0", func() error {
		return b.Add(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: 0, Length: 128 * mi}})
	}), "adding an aligned extent succeeds (it stays pending: no guest)")

	err = timed("add misaligned", func() error {
		return b.Add(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: 1000, Length: 1000}})
	})
	assert.ErrorIs(t, err, backend.ErrMisaligned)
	assert.ErrorContains(t, err, "not aligned to region block size")

	err = timed("release pending", func() error {
		return b.Release(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: 0, Length: 128 * mi}})
	})
	assert.ErrorIs(t, err, backend.ErrPending)
	assert.ErrorContains(t, err, "cannot release extent with pending DPA range")

	err = timed("release an extent never added", func() error {
		return b.Release(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: 4 * 128 * mi, Length: 128 * mi}})
	})
	assert.ErrorIs(t, err, backend.ErrNotFound, "an extent the device does not hold is already back")

	// QEMU's QMP socket serves one client at a time: each backend below closes its
	// connection before the next one dials.
	require.NoError(t, b.Close())

	// A wrong device id: QEMU answers on the socket, but no release may read as done.
	wrong, err := qemu.New(qemu.Config{SocketPath: socket, DevicePath: "/machine/peripheral/cxl-dcd9", Capacity: 1 << 30, BlockSize: 128 * mi, Timeout: 10 * time.Second})
	require.NoError(t, err)
	_, err = wrong.Check(ctx)
	assert.ErrorIs(t, err, backend.ErrNoDevice, "Check proves the device exists")
	assert.ErrorContains(t, err, "/machine/peripheral/cxl-dcd9")
	err = wrong.Release(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: 0, Length: 128 * mi}})
	assert.ErrorIs(t, err, backend.ErrNoDevice)
	assert.NotErrorIs(t, err, backend.ErrNotFound, "a missing device is no released extent")
	require.NoError(t, wrong.Close())

	notDCD, err := qemu.New(qemu.Config{SocketPath: socket, DevicePath: "/machine/peripheral/root_port13", Capacity: 1 << 30, BlockSize: 128 * mi})
	require.NoError(t, err)
	_, err = notDCD.Check(ctx)
	assert.ErrorIs(t, err, backend.ErrNoDevice)
	assert.ErrorContains(t, err, "is a cxl-rp, not a cxl-type3 device")
	require.NoError(t, notDCD.Close())

	noRegion, err := qemu.New(qemu.Config{SocketPath: socket, Region: 2, Capacity: 1 << 30, BlockSize: 128 * mi})
	require.NoError(t, err)
	defer noRegion.Close()
	_, err = noRegion.Check(ctx)
	assert.ErrorIs(t, err, backend.ErrNoDevice)
	assert.ErrorContains(t, err, "has 2 dynamic capacity regions, the pool uses region 2")
}
