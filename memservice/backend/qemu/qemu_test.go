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
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/qemu"
)

const (
	mi        = int64(1) << 20
	blockSize = 128 * mi
	region    = 2048 * mi
	devPath   = "/machine/peripheral/cxl-dcd0"
	tagUUID   = "0b7c3f6e-1d2a-4c5b-8e9f-000000000001"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// fakeQMP is a QMP peer on a Unix socket that speaks the protocol as QEMU 10 does
// (greeting, capabilities negotiation, events between answers) and checks the
// arguments of the dynamic capacity commands the way QEMU's cxl-type3 device does.
type fakeQMP struct {
	t    *testing.T
	path string
	lis  net.Listener

	mu       sync.Mutex
	accepted int
	commands []map[string]any
	// pending extents per host (QEMU keeps added extents pending without a guest).
	pending []extent
	// hang: answer no command; drop: close the connection on the next command.
	hang, drop bool
	// failNext, if set, is the error the next command is answered with.
	failNext *qmpFailure
}

type qmpFailure struct{ class, desc string }

// qomTypes are the devices of the fake machine by QOM path, with their type.
var qomTypes = map[string]string{devPath: "cxl-type3", "/machine/peripheral/root_port13": "cxl-rp"}

// qomGet answers qom-get as QEMU does: DeviceNotFound for a path that resolves to
// nothing, the type of any device, num-dc-regions of the cxl-type3 device.
func qomGet(args map[string]any) (any, *qmpFailure) {
	path, _ := args["path"].(string)
	typ, ok := qomTypes[path]
	if !ok {
		return nil, &qmpFailure{"DeviceNotFound", fmt.Sprintf("Device '%s' not found", path)}
	}
	switch prop := args["property"]; {
	case prop == "type":
		return typ, nil
	case prop == "num-dc-regions" && typ == "cxl-type3":
		return 2, nil
	default:
		return nil, &qmpFailure{"GenericError", fmt.Sprintf("Property '%s.%v' not found", typ, prop)}
	}
}

type extent struct {
	host        int
	offset, len int64
	tag         string
}

func startFakeQMP(t *testing.T) *fakeQMP {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	lis, err := net.Listen("unix", path)
	require.NoError(t, err)
	f := &fakeQMP{t: t, path: path, lis: lis}
	t.Cleanup(func() { _ = lis.Close() })
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.accepted++
			f.mu.Unlock()
			go f.serve(conn)
		}
	}()
	return f
}

func (f *fakeQMP) serve(conn net.Conn) {
	defer conn.Close()
	w := json.NewEncoder(conn)
	_ = w.Encode(map[string]any{"QMP": map[string]any{
		"version":      map[string]any{"qemu": map[string]int{"major": 10, "minor": 0, "micro": 3}, "package": "Debian 1:10.0.3+ds-1"},
		"capabilities": []string{"oob"},
	}})
	r := bufio.NewScanner(conn)
	negotiated := false
	for r.Scan() {
		var cmd map[string]any
		if err := json.Unmarshal(r.Bytes(), &cmd); err != nil {
			_ = w.Encode(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "JSON parse error"}})
			continue
		}
		f.mu.Lock()
		f.commands = append(f.commands, cmd)
		hang, drop, failNext := f.hang, f.drop, f.failNext
		f.drop = false
		if name, _ := cmd["execute"].(string); name != "qmp_capabilities" {
			f.failNext = nil
		} else {
			failNext = nil
		}
		f.mu.Unlock()
		if drop {
			return
		}
		if hang {
			continue
		}
		id := cmd["id"]
		name, _ := cmd["execute"].(string)
		if !negotiated && name != "qmp_capabilities" {
			_ = w.Encode(map[string]any{"id": id, "error": map[string]string{"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}})
			continue
		}
		// An unrelated event before the answer, as QEMU may send.
		_ = w.Encode(map[string]any{"event": "RTC_CHANGE", "data": map[string]int{"offset": 0}, "timestamp": map[string]int{"seconds": 1}})
		if failNext != nil {
			_ = w.Encode(map[string]any{"id": id, "error": map[string]string{"class": failNext.class, "desc": failNext.desc}})
			continue
		}
		var ret any = map[string]any{}
		var qerr error
		switch name {
		case "qmp_capabilities":
			negotiated = true
		case "query-version":
			ret = map[string]any{"qemu": map[string]int{"major": 10, "minor": 0, "micro": 3}, "package": ""}
		case "qom-get":
			var fail *qmpFailure
			if ret, fail = qomGet(cmd["arguments"].(map[string]any)); fail != nil {
				_ = w.Encode(map[string]any{"id": id, "error": map[string]string{"class": fail.class, "desc": fail.desc}})
				continue
			}
		case "cxl-add-dynamic-capacity":
			qerr = f.add(cmd["arguments"].(map[string]any))
		case "cxl-release-dynamic-capacity":
			qerr = f.release(cmd["arguments"].(map[string]any))
		default:
			qerr = fmt.Errorf("CommandNotFound:The command %s has not been found", name)
		}
		if qerr != nil {
			_ = w.Encode(map[string]any{"id": id, "error": map[string]string{"class": "GenericError", "desc": qerr.Error()}})
			continue
		}
		_ = w.Encode(map[string]any{"id": id, "return": ret})
	}
}

// checkCommon checks the arguments QEMU requires of both commands.
func (f *fakeQMP) checkCommon(args map[string]any, policyKey, policy string) ([]extent, error) {
	if args["path"] != devPath {
		return nil, fmt.Errorf("Unable to resolve CXL type 3 device") // QEMU 10's words for any path that is no cxl-type3
	}
	if args[policyKey] != policy {
		return nil, fmt.Errorf("unexpected %s %v", policyKey, args[policyKey])
	}
	if args["region"] != float64(0) {
		return nil, fmt.Errorf("region id is too large")
	}
	tag, _ := args["tag"].(string)
	if !uuidRE.MatchString(tag) {
		return nil, fmt.Errorf("tag %q is not a UUID", tag)
	}
	host := int(args["host-id"].(float64))
	list, _ := args["extents"].([]any)
	if len(list) == 0 {
		return nil, fmt.Errorf("no extents to add")
	}
	var out []extent
	for _, e := range list {
		m := e.(map[string]any)
		x := extent{host: host, offset: int64(m["offset"].(float64)), len: int64(m["len"].(float64)), tag: tag}
		if x.offset%blockSize != 0 || x.len%blockSize != 0 {
			return nil, fmt.Errorf("dpa or len is not aligned to region block size")
		}
		if x.offset+x.len > region {
			return nil, fmt.Errorf("extent range is out of range of the region")
		}
		out = append(out, x)
	}
	return out, nil
}

func (f *fakeQMP) add(args map[string]any) error {
	list, err := f.checkCommon(args, "selection-policy", "prescriptive")
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range list {
		for _, p := range f.pending {
			if x.offset < p.offset+p.len && p.offset < x.offset+x.len {
				return fmt.Errorf("cannot add extent: range overlaps with a pending extent")
			}
		}
	}
	f.pending = append(f.pending, list...)
	return nil
}

func (f *fakeQMP) release(args map[string]any) error {
	list, err := f.checkCommon(args, "removal-policy", "prescriptive")
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range list {
		for _, p := range f.pending {
			if x.offset < p.offset+p.len && p.offset < x.offset+x.len {
				return fmt.Errorf("cannot release extent with pending DPA range")
			}
		}
	}
	return fmt.Errorf("cannot find extent to release")
}

func (f *fakeQMP) set(fn func(f *fakeQMP)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func newBackend(t *testing.T, f *fakeQMP) *qemu.Backend {
	t.Helper()
	b, err := qemu.New(qemu.Config{SocketPath: f.path, Capacity: region, BlockSize: blockSize, Timeout: time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestAddSendsTheCommandQEMUExpects(t *testing.T) {
	f := startFakeQMP(t)
	b := newBackend(t, f)
	err := b.Add(context.Background(), 3, tagUUID, []v1alpha1.Extent{{Offset: 0, Length: blockSize}, {Offset: 4 * blockSize, Length: 2 * blockSize}})
	require.NoError(t, err)

	f.mu.Lock()
	defer f.mu.Unlock()
	require.Len(t, f.commands, 2)
	assert.Equal(t, "qmp_capabilities", f.commands[0]["execute"], "capabilities are negotiated first")
	assert.Equal(t, map[string]any{
		"path": devPath, "host-id": float64(3), "selection-policy": "prescriptive", "region": float64(0), "tag": tagUUID,
		"extents": []any{
			map[string]any{"offset": float64(0), "len": float64(blockSize)},
			map[string]any{"offset": float64(4 * blockSize), "len": float64(2 * blockSize)},
		},
	}, f.commands[1]["arguments"])
	assert.Len(t, f.pending, 2)
}

func TestQEMUErrorsAreMapped(t *testing.T) {
	f := startFakeQMP(t)
	b := newBackend(t, f)
	ctx := context.Background()
	require.NoError(t, b.Add(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: 0, Length: blockSize}}))

	tests := []struct {
		name string
		call func() error
		want error
		desc string
	}{
		{"misaligned add", func() error { return b.Add(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: 1000, Length: 1000}}) },
			backend.ErrMisaligned, "dpa or len is not aligned to region block size"},
		{"overlapping add", func() error { return b.Add(ctx, 1, tagUUID, []v1alpha1.Extent{{Offset: 0, Length: blockSize}}) },
			backend.ErrInUse, "overlaps"},
		{"add beyond the region", func() error {
			return b.Add(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: region, Length: blockSize}})
		}, backend.ErrOutOfRange, "out of range"},
		{"release of a pending range", func() error { return b.Release(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: 0, Length: blockSize}}) },
			backend.ErrPending, "cannot release extent with pending DPA range"},
		{"release of an unknown extent", func() error {
			return b.Release(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: 8 * blockSize, Length: blockSize}})
		}, backend.ErrNotFound, "cannot find extent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.desc, "QEMU's own words are kept")
			var qerr *qemu.QMPError
			require.ErrorAs(t, err, &qerr)
			assert.Equal(t, "GenericError", qerr.Class)
		})
	}
	f.mu.Lock()
	assert.Equal(t, 1, f.accepted, "errors keep the connection")
	f.mu.Unlock()
}

func TestCheckReportsTheVersionAndTheConfiguredRegion(t *testing.T) {
	f := startFakeQMP(t)
	b := newBackend(t, f)
	c, err := b.Check(context.Background())
	require.NoError(t, err)
	assert.Equal(t, backend.Capacity{Bytes: region, BlockSize: blockSize}, c)
	v, err := b.Version(context.Background())
	require.NoError(t, err)
	assert.Equal(t, "10.0.3", v)
	_, err = b.List(context.Background())
	assert.ErrorIs(t, err, backend.ErrNotSupported)
}

func TestTimeoutDropsTheConnectionAndTheNextCallReconnects(t *testing.T) {
	f := startFakeQMP(t)
	b := newBackend(t, f)
	ctx := context.Background()
	_, err := b.Check(ctx)
	require.NoError(t, err)

	f.set(func(f *fakeQMP) { f.hang = true })
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = b.Add(short, 0, tagUUID, []v1alpha1.Extent{{Offset: 0, Length: blockSize}})
	assert.ErrorIs(t, err, backend.ErrUnavailable)
	assert.Less(t, time.Since(start), 2*time.Second, "the caller's deadline bounds the call")

	f.set(func(f *fakeQMP) { f.hang = false })
	require.NoError(t, b.Add(ctx, 0, tagUUID, []v1alpha1.Extent{{Offset: 0, Length: blockSize}}))
	f.mu.Lock()
	assert.Equal(t, 2, f.accepted, "a new connection was made")
	f.mu.Unlock()
}

func TestAStaleConnectionIsRedialedOnce(t *testing.T) {
	f := startFakeQMP(t)
	b := newBackend(t, f)
	ctx := context.Background()
	_, err := b.Check(ctx)
	require.NoError(t, err)
	f.set(func(f *fakeQMP) { f.drop = true })
	_, err = b.Check(ctx)
	assert.ErrorIs(t, err, backend.ErrUnavailable, "the command was sent: no blind retry")
	_, err = b.Check(ctx)
	require.NoError(t, err, "the next call dials again")
}

func TestNoSocketIsUnavailable(t *testing.T) {
	b, err := qemu.New(qemu.Config{SocketPath: filepath.Join(t.TempDir(), "missing.sock")})
	require.NoError(t, err)
	_, err = b.Check(context.Background())
	assert.ErrorIs(t, err, backend.ErrUnavailable)
	assert.Contains(t, err.Error(), "connect to QMP socket")
}

func TestConfigIsValidated(t *testing.T) {
	_, err := qemu.New(qemu.Config{})
	assert.ErrorContains(t, err, "socketPath is required")
	_, err = qemu.New(qemu.Config{SocketPath: "/x", Region: 9})
	assert.ErrorContains(t, err, "region must be 0 to 7, got 9")
}

// A release QEMU answers with "no such device" did not release anything: the memory
// may still be on the device the service meant. It must never read as an extent that
// is already gone (backend.ErrNotFound), which would let the service drop the record.
func TestReleaseOnADeviceThatIsNotFoundIsNoReleasedExtent(t *testing.T) {
	tests := []struct {
		name   string
		answer *qmpFailure // nil: the fake's own answer for a wrong device path
	}{
		{"QEMU 10's words for a path that is no cxl-type3", nil},
		{"the DeviceNotFound error class", &qmpFailure{"DeviceNotFound", "Device 'cxl-dcd0' not found"}},
		{"a generic error naming a device that is not found", &qmpFailure{"GenericError", "Device '/machine/peripheral/cxl-dcd0' not found"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeQMP(t)
			b, err := qemu.New(qemu.Config{SocketPath: f.path, DevicePath: "/machine/peripheral/cxl-dcd9", Capacity: region, BlockSize: blockSize, Timeout: time.Second})
			require.NoError(t, err)
			t.Cleanup(func() { _ = b.Close() })
			f.set(func(f *fakeQMP) { f.failNext = tc.answer })
			err = b.Release(context.Background(), 0, tagUUID, []v1alpha1.Extent{{Offset: 0, Length: blockSize}})
			require.Error(t, err)
			assert.NotErrorIs(t, err, backend.ErrNotFound, "a missing device is no released extent")
			assert.ErrorIs(t, err, backend.ErrNoDevice)
			assert.ErrorContains(t, err, "/machine/peripheral/cxl-dcd9", "the error names the device path to fix")
		})
	}
}

func TestCheckProvesTheDeviceAndRegionExist(t *testing.T) {
	tests := []struct {
		name       string
		devicePath string
		region     int32
		want       string
	}{
		{"no device at the path", "/machine/peripheral/cxl-dcd9", 0, "Device '/machine/peripheral/cxl-dcd9' not found"},
		{"a device that is no cxl-type3", "/machine/peripheral/root_port13", 0, "is a cxl-rp, not a cxl-type3"},
		{"a region the device does not have", devPath, 2, "has 2 dynamic capacity regions, the pool uses region 2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeQMP(t)
			b, err := qemu.New(qemu.Config{SocketPath: f.path, DevicePath: tc.devicePath, Region: tc.region, Capacity: region, BlockSize: blockSize, Timeout: time.Second})
			require.NoError(t, err)
			t.Cleanup(func() { _ = b.Close() })
			_, err = b.Check(context.Background())
			require.Error(t, err, "the QMP socket answers, but the device is not there")
			assert.ErrorIs(t, err, backend.ErrNoDevice)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}
