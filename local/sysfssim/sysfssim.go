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

// Package sysfssim serves over FUSE the part of sysfs that the node agent's sysfs
// host backend reads and writes, and answers like the kernel: memory blocks whose
// state goes online when "online" or "online_movable" is written and offline when
// "offline" is, and the CXL regions that hold them. The local cluster's real node
// runs its agent with the sysfs backend on this tree, since the machine has no CXL
// region whose memory blocks the agent could drive.
//
// The tree has, under the mount point (the agent's --sysfs-root):
//
//	sys/devices/system/memory/block_size_bytes        the block size, hexadecimal
//	sys/devices/system/memory/memoryN/state           offline | online
//	sys/devices/system/memory/memoryN/valid_zones     Movable Normal (offline) | Movable
//	sys/devices/system/memory/memoryN/removable       1
//	sys/devices/system/memory/memoryN/phys_index      N, hexadecimal
//	sys/devices/system/memory/memoryN/nodeM/          the block's NUMA node
//	sys/bus/cxl/devices/regionR/{resource,size,mode}  each region: start, size, ram
//
// Every block of a region is present from the start (the region's capacity added to
// the host, offline), so the agent finds an extent's blocks at once.
package sysfssim

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Region is a CXL region of the simulated host.
type Region struct {
	// Name is regionN.
	Name string
	// Start and Size are its host physical address range, multiples of the block size.
	Start, Size int64
	// NUMANode holds its memory (a CXL memory expander is a CPU-less NUMA node).
	NUMANode int
}

// Config is the simulated host.
type Config struct {
	BlockSize int64
	Regions   []Region
}

// Validate says what is wrong with the configuration, naming the field.
func (c Config) Validate() error {
	if c.BlockSize <= 0 || c.BlockSize&(c.BlockSize-1) != 0 {
		return fmt.Errorf("block size %d: must be a power of two", c.BlockSize)
	}
	var errs []error
	for i, r := range c.Regions {
		id, ok := strings.CutPrefix(r.Name, "region")
		if _, err := strconv.Atoi(id); !ok || err != nil {
			errs = append(errs, fmt.Errorf("regions[%d].name %q: must be regionN, as the kernel names CXL regions", i, r.Name))
		}
		if r.Start < 0 || r.Size <= 0 || r.Start%c.BlockSize != 0 || r.Size%c.BlockSize != 0 {
			errs = append(errs, fmt.Errorf("regions[%d] %s: start %#x and size %#x must be multiples of the block size %#x, the size positive", i, r.Name, r.Start, r.Size, c.BlockSize))
		}
		if r.NUMANode < 0 {
			errs = append(errs, fmt.Errorf("regions[%d] %s: NUMA node %d must not be negative", i, r.Name, r.NUMANode))
		}
		for j, o := range c.Regions[:i] {
			if r.Start < o.Start+o.Size && o.Start < r.Start+r.Size {
				errs = append(errs, fmt.Errorf("regions[%d] %s overlaps regions[%d] %s", i, r.Name, j, o.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// Mount serves the tree at dir (which must exist) until the server is unmounted.
func Mount(dir string, cfg Config) (*fuse.Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	root := &fs.Inode{}
	return fs.Mount(dir, root, &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName: "sysfs-sim", Name: "sysfssim",
			// As root, mount(2) itself: no fusermount binary is needed.
			DirectMount: true,
			AllowOther:  true,
		},
		OnAdd: func(ctx context.Context) { build(ctx, root, cfg) },
	})
}

func build(ctx context.Context, root *fs.Inode, cfg Config) {
	memory := mkdirs(ctx, root, "sys", "devices", "system", "memory")
	addFile(ctx, memory, "block_size_bytes", strconv.FormatInt(cfg.BlockSize, 16)+"\n")
	cxl := mkdirs(ctx, root, "sys", "bus", "cxl", "devices")
	for _, r := range cfg.Regions {
		region := mkdirs(ctx, cxl, r.Name)
		addFile(ctx, region, "resource", fmt.Sprintf("%#x\n", r.Start))
		addFile(ctx, region, "size", fmt.Sprintf("%#x\n", r.Size))
		addFile(ctx, region, "mode", "ram\n")
		for n := r.Start / cfg.BlockSize; n < (r.Start+r.Size)/cfg.BlockSize; n++ {
			dir := mkdirs(ctx, memory, "memory"+strconv.FormatInt(n, 10))
			b := &block{state: stateOffline}
			dir.AddChild("state", dir.NewPersistentInode(ctx, newStateFile(b), fs.StableAttr{Mode: syscall.S_IFREG}), true)
			dir.AddChild("valid_zones", dir.NewPersistentInode(ctx, newZonesFile(b), fs.StableAttr{Mode: syscall.S_IFREG}), true)
			addFile(ctx, dir, "removable", "1\n")
			addFile(ctx, dir, "phys_index", fmt.Sprintf("%08x\n", n))
			mkdirs(ctx, dir, "node"+strconv.Itoa(r.NUMANode))
		}
	}
}

func mkdirs(ctx context.Context, parent *fs.Inode, names ...string) *fs.Inode {
	for _, name := range names {
		child := parent.GetChild(name)
		if child == nil {
			child = parent.NewPersistentInode(ctx, &fs.Inode{}, fs.StableAttr{Mode: syscall.S_IFDIR})
			parent.AddChild(name, child, true)
		}
		parent = child
	}
	return parent
}

func addFile(ctx context.Context, dir *fs.Inode, name, content string) {
	f := &fs.MemRegularFile{Data: []byte(content), Attr: fuse.Attr{Mode: 0o444}}
	dir.AddChild(name, dir.NewPersistentInode(ctx, f, fs.StableAttr{Mode: syscall.S_IFREG}), true)
}

// Block states as the kernel reads them.
const (
	stateOnline  = "online"
	stateOffline = "offline"
)

// block is one memory block's state, shared by its files.
type block struct {
	mu    sync.Mutex
	state string
}

func (b *block) get() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// set changes the state as the kernel's state_store does: online, online_movable
// and online_kernel online an offline block, offline offlines an online one; a
// block already in the asked state, or any other word, is EINVAL.
func (b *block) set(word string) syscall.Errno {
	b.mu.Lock()
	defer b.mu.Unlock()
	var to string
	switch word {
	case "online", "online_movable", "online_kernel":
		to = stateOnline
	case "offline":
		to = stateOffline
	default:
		return syscall.EINVAL
	}
	if b.state == to {
		return syscall.EINVAL
	}
	b.state = to
	return 0
}

// dynamicFile is a sysfs attribute: read afresh at every open, never cached.
type dynamicFile struct {
	fs.Inode
	read  func() string
	write func(string) syscall.Errno // nil: read-only
}

var (
	_ fs.NodeOpener    = (*dynamicFile)(nil)
	_ fs.NodeReader    = (*dynamicFile)(nil)
	_ fs.NodeWriter    = (*dynamicFile)(nil)
	_ fs.NodeGetattrer = (*dynamicFile)(nil)
	_ fs.NodeSetattrer = (*dynamicFile)(nil)
)

func (f *dynamicFile) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if f.write == nil && flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0 {
		return nil, 0, syscall.EACCES
	}
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (f *dynamicFile) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	data := []byte(f.read())
	if off >= int64(len(data)) {
		return fuse.ReadResultData(nil), 0
	}
	return fuse.ReadResultData(data[off:min(int64(len(data)), off+int64(len(dest)))]), 0
}

// Write takes the whole word at once, as sysfs stores do.
func (f *dynamicFile) Write(ctx context.Context, fh fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if f.write == nil {
		return 0, syscall.EACCES
	}
	if errno := f.write(strings.TrimSpace(string(data))); errno != 0 {
		return 0, errno
	}
	return uint32(len(data)), 0
}

func (f *dynamicFile) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o444
	if f.write != nil {
		out.Mode = 0o644
	}
	// sysfs reports a page whatever the content; readers read until EOF.
	out.Size = 4096
	return 0
}

// Setattr accepts the truncation of an open for writing (O_TRUNC), which sysfs
// ignores.
func (f *dynamicFile) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.Getattr(ctx, fh, out)
}

func newStateFile(b *block) *dynamicFile {
	return &dynamicFile{read: func() string { return b.get() + "\n" }, write: b.set}
}

func newZonesFile(b *block) *dynamicFile {
	return &dynamicFile{read: func() string {
		if b.get() == stateOnline {
			return "Movable\n"
		}
		return "Movable Normal\n"
	}}
}
