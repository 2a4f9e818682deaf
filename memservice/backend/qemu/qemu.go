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

// Package qemu drives QEMU's CXL type-3 Dynamic Capacity Device emulation over QMP
// (JSON on a Unix socket): cxl-add-dynamic-capacity and cxl-release-dynamic-capacity
// (QEMU 9.1 and later) with the prescriptive policy, so the memory service decides
// the device ranges, tagged with the reservation's claim UID.
//
// One connection is kept and commands are sent one at a time; a broken or timed-out
// connection is dropped and the next command dials again. QEMU's errors are mapped to
// the backend package's errors.
package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend"
)

// DefaultDevicePath is the QOM path of a cxl-type3 device with id cxl-dcd0.
const DefaultDevicePath = "/machine/peripheral/cxl-dcd0"

// DefaultTimeout bounds one QMP exchange when the caller's context has no deadline.
const DefaultTimeout = 10 * time.Second

// Config addresses a DCD of a QEMU machine.
type Config struct {
	// SocketPath is the QMP Unix socket (-qmp unix:PATH,server=on,wait=off).
	SocketPath string
	// DevicePath is the QOM path of the cxl-type3 device (default DefaultDevicePath).
	DevicePath string
	// Region is the dynamic capacity region extents come from.
	Region int32
	// Capacity and BlockSize of the region as configured on the QEMU command line:
	// QMP cannot report them.
	Capacity  int64
	BlockSize int64
	// Timeout bounds one exchange (default DefaultTimeout).
	Timeout time.Duration
}

// Backend is a QMP client for one device. Safe for concurrent use.
type Backend struct {
	cfg Config

	mu     sync.Mutex
	conn   net.Conn
	reader *bufio.Reader
	nextID int
}

// New makes a backend; it connects on first use.
func New(cfg Config) (*Backend, error) {
	if cfg.SocketPath == "" {
		return nil, errors.New("qemu backend: socketPath is required")
	}
	if cfg.DevicePath == "" {
		cfg.DevicePath = DefaultDevicePath
	}
	if cfg.Region < 0 || cfg.Region > 7 {
		return nil, fmt.Errorf("qemu backend: region must be 0 to 7, got %d", cfg.Region)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	return &Backend{cfg: cfg}, nil
}

// Close drops the connection.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropLocked()
	return nil
}

func (b *Backend) dropLocked() {
	if b.conn != nil {
		_ = b.conn.Close()
	}
	b.conn, b.reader = nil, nil
}

// QMPError is an error QEMU answered with.
type QMPError struct {
	Command string
	// Path is the QOM path of the device the command addressed ("" if none).
	Path  string
	Class string
	Desc  string
	kind  error
}

func (e *QMPError) Error() string {
	msg := fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
	if e.Path != "" {
		msg = fmt.Sprintf("qmp %s on %s: %s: %s", e.Command, e.Path, e.Class, e.Desc)
	}
	if e.kind != nil {
		msg = fmt.Sprintf("%s (%s)", e.kind, msg)
	}
	return msg
}

// Unwrap gives the backend error the QEMU message maps to, if any.
func (e *QMPError) Unwrap() error { return e.kind }

// classify maps QEMU's words to backend errors. A device that cannot be found comes
// first: its words ("Device '...' not found") must never read as an extent that is
// not found, which tells the service the extent is already back.
func classify(class, desc string) error {
	d := strings.ToLower(desc)
	switch {
	case class == "DeviceNotFound",
		strings.Contains(d, "unable to resolve"),    // QEMU 10: "Unable to resolve CXL type 3 device"
		strings.Contains(d, "not point to a valid"), // QEMU 9: "Path not point to a valid CXL type3 device"
		strings.HasPrefix(d, "device '") && strings.Contains(d, "not found"):
		return backend.ErrNoDevice
	case strings.Contains(d, "not aligned"):
		return backend.ErrMisaligned
	case strings.Contains(d, "overlap"):
		return backend.ErrInUse
	case strings.Contains(d, "pending"):
		return backend.ErrPending
	case strings.Contains(d, "out of range"), strings.Contains(d, "exceed"), strings.Contains(d, "beyond"):
		return backend.ErrOutOfRange
	case strings.Contains(d, "not backed"), strings.Contains(d, "cannot find"), strings.Contains(d, "not found"), strings.Contains(d, "does not exist"),
		strings.Contains(d, "non-existing"): // QEMU 10: "cannot release extent with non-existing DPA range"
		return backend.ErrNotFound
	}
	return nil
}

type extentArg struct {
	Offset int64 `json:"offset"`
	Len    int64 `json:"len"`
}

func extentArgs(extents []v1alpha1.Extent) []extentArg {
	out := make([]extentArg, len(extents))
	for i, e := range extents {
		out[i] = extentArg{Offset: e.Offset, Len: e.Length}
	}
	return out
}

// Add gives extents to a host (cxl-add-dynamic-capacity, prescriptive).
func (b *Backend) Add(ctx context.Context, hostID int32, tag string, extents []v1alpha1.Extent) error {
	return b.onDevice(ctx, "cxl-add-dynamic-capacity", map[string]any{
		"host-id":          hostID,
		"selection-policy": "prescriptive",
		"region":           b.cfg.Region,
		"tag":              tag,
		"extents":          extentArgs(extents),
	}, nil)
}

// Release takes extents back from a host (cxl-release-dynamic-capacity, prescriptive).
func (b *Backend) Release(ctx context.Context, hostID int32, tag string, extents []v1alpha1.Extent) error {
	return b.onDevice(ctx, "cxl-release-dynamic-capacity", map[string]any{
		"host-id":        hostID,
		"removal-policy": "prescriptive",
		"region":         b.cfg.Region,
		"tag":            tag,
		"extents":        extentArgs(extents),
	}, nil)
}

// List is not supported: QMP has no command that lists a DCD's extents.
func (b *Backend) List(context.Context) ([]backend.HostExtent, error) {
	return nil, fmt.Errorf("qemu backend: list extents: %w", backend.ErrNotSupported)
}

// deviceType is the QOM type of a CXL type-3 memory device.
const deviceType = "cxl-type3"

// Check proves that the device is there: QEMU answers and is 9.1 or later, the
// configured QOM path is a cxl-type3 device (qom-get of its type), and the device has
// the configured dynamic capacity region (qom-get of num-dc-regions). It reports the
// region as configured (QMP cannot report its size).
func (b *Backend) Check(ctx context.Context) (backend.Capacity, error) {
	var v struct {
		QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
	}
	if err := b.execute(ctx, "query-version", nil, &v); err != nil {
		return backend.Capacity{}, err
	}
	if v.QEMU.Major < 9 || v.QEMU.Major == 9 && v.QEMU.Minor < 1 {
		return backend.Capacity{}, fmt.Errorf("qemu backend: QEMU %d.%d.%d has no dynamic capacity commands (needs 9.1 or later)", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
	}
	var typ string
	if err := b.onDevice(ctx, "qom-get", map[string]any{"property": "type"}, &typ); err != nil {
		return backend.Capacity{}, err
	}
	if typ != deviceType {
		return backend.Capacity{}, fmt.Errorf("qemu backend: %w: %s is a %s, not a %s device", backend.ErrNoDevice, b.cfg.DevicePath, typ, deviceType)
	}
	var regions int32
	if err := b.onDevice(ctx, "qom-get", map[string]any{"property": "num-dc-regions"}, &regions); err != nil {
		return backend.Capacity{}, err
	}
	if b.cfg.Region >= regions {
		return backend.Capacity{}, fmt.Errorf("qemu backend: %w: %s has %d dynamic capacity regions, the pool uses region %d", backend.ErrNoDevice, b.cfg.DevicePath, regions, b.cfg.Region)
	}
	return backend.Capacity{Bytes: b.cfg.Capacity, BlockSize: b.cfg.BlockSize}, nil
}

// Version reports QEMU's version string ("10.0.3").
func (b *Backend) Version(ctx context.Context) (string, error) {
	var v struct {
		QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
	}
	if err := b.execute(ctx, "query-version", nil, &v); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro), nil
}

type request struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        int    `json:"id"`
}

type response struct {
	QMP    json.RawMessage `json:"QMP"`
	Event  string          `json:"event"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	ID *int `json:"id"`
}

// onDevice executes a command on the configured device: args get its QOM path, and
// an error QEMU answers with names it.
func (b *Backend) onDevice(ctx context.Context, command string, args map[string]any, result any) error {
	args["path"] = b.cfg.DevicePath
	err := b.execute(ctx, command, args, result)
	var qerr *QMPError
	if errors.As(err, &qerr) {
		qerr.Path = b.cfg.DevicePath
	}
	return err
}

// execute sends one command and reads its answer, skipping events. A connection that
// fails before the command was sent is dialed again once.
func (b *Backend) execute(ctx context.Context, command string, args any, result any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(b.cfg.Timeout)
	}
	for attempt := 0; ; attempt++ {
		fresh := b.conn == nil
		if err := b.connectLocked(ctx, deadline); err != nil {
			return err
		}
		b.nextID++
		id := b.nextID
		data, err := json.Marshal(request{Execute: command, Arguments: args, ID: id})
		if err != nil {
			return fmt.Errorf("qmp %s: encode: %w", command, err)
		}
		_ = b.conn.SetDeadline(deadline)
		if _, err := b.conn.Write(append(data, '\n')); err != nil {
			b.dropLocked()
			if !fresh && attempt == 0 {
				continue // the old connection was stale; QEMU never saw the command
			}
			return fmt.Errorf("%w: qmp %s: send: %w", backend.ErrUnavailable, command, err)
		}
		resp, err := b.readAnswer(id)
		if err != nil {
			b.dropLocked()
			return fmt.Errorf("%w: qmp %s: %w", backend.ErrUnavailable, command, err)
		}
		if resp.Error != nil {
			return &QMPError{Command: command, Class: resp.Error.Class, Desc: resp.Error.Desc, kind: classify(resp.Error.Class, resp.Error.Desc)}
		}
		if result != nil {
			if err := json.Unmarshal(resp.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decode answer %s: %w", command, resp.Return, err)
			}
		}
		return nil
	}
}

func (b *Backend) readAnswer(id int) (*response, error) {
	for {
		line, err := b.reader.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("read answer: %w", err)
		}
		var resp response
		if err := json.Unmarshal(line, &resp); err != nil {
			return nil, fmt.Errorf("read answer: not JSON: %q", line)
		}
		if resp.Event != "" {
			continue
		}
		if resp.ID == nil || *resp.ID != id {
			continue // an answer to a command given up on earlier
		}
		if resp.Return == nil && resp.Error == nil {
			return nil, fmt.Errorf("read answer: neither return nor error: %q", line)
		}
		return &resp, nil
	}
}

// connectLocked dials, reads the greeting and negotiates capabilities.
func (b *Backend) connectLocked(ctx context.Context, deadline time.Time) error {
	if b.conn != nil {
		return nil
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "unix", b.cfg.SocketPath)
	if err != nil {
		return fmt.Errorf("%w: connect to QMP socket %s: %w", backend.ErrUnavailable, b.cfg.SocketPath, err)
	}
	_ = conn.SetDeadline(deadline)
	r := bufio.NewReader(conn)
	line, err := r.ReadBytes('\n')
	if err != nil {
		_ = conn.Close()
		return fmt.Errorf("%w: read QMP greeting from %s: %w", backend.ErrUnavailable, b.cfg.SocketPath, err)
	}
	var greeting response
	if err := json.Unmarshal(line, &greeting); err != nil || greeting.QMP == nil {
		_ = conn.Close()
		return fmt.Errorf("%w: %s did not greet with QMP: %q", backend.ErrUnavailable, b.cfg.SocketPath, line)
	}
	b.conn, b.reader = conn, r
	b.nextID++
	id := b.nextID
	data, _ := json.Marshal(request{Execute: "qmp_capabilities", ID: id})
	if _, err := conn.Write(append(data, '\n')); err != nil {
		b.dropLocked()
		return fmt.Errorf("%w: qmp_capabilities: %w", backend.ErrUnavailable, err)
	}
	resp, err := b.readAnswer(id)
	if err != nil {
		b.dropLocked()
		return fmt.Errorf("%w: qmp_capabilities: %w", backend.ErrUnavailable, err)
	}
	if resp.Error != nil {
		b.dropLocked()
		return fmt.Errorf("%w: qmp_capabilities: %s: %s", backend.ErrUnavailable, resp.Error.Class, resp.Error.Desc)
	}
	return nil
}
