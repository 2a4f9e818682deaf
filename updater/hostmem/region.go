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
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Regions: a pool's dynamic capacity shows up on a host in one range of host physical
// address space, and extent offsets are offsets in that range. On a CXL host the range
// is a CXL region, made by the kernel or by `cxl create-region` from the device's
// decoders:
//
//	/sys/bus/cxl/devices/regionN/resource   first address, "%#llx" (all ones until sized)
//	/sys/bus/cxl/devices/regionN/size       bytes, "%#llx" (0 until sized)
//	/sys/bus/cxl/devices/regionN/mode       ram, pmem, or the dynamic capacity mode
//
// Memory that the platform hands out as a DAX device without a CXL region (EFI
// soft-reserved memory under dax_hmem, for example) has its range in the DAX device's
// resource and size attributes (see dax.go). The agent reads the region of each pool
// from these files when it starts; it never assumes one.
const cxlDevicesDir = "/sys/bus/cxl/devices"

// Region is a range of host physical address space that holds a pool's memory.
type Region struct {
	// Name is the sysfs device of the range: regionN (a CXL region) or daxX.Y (a
	// DAX device).
	Name string
	// Start is the host physical address of the region's first byte.
	Start int64
	// Size in bytes; 0 for a CXL region that has no address space yet.
	Size int64
	// Mode is a CXL region's mode as sysfs reads it; empty for a DAX device.
	Mode string
}

func (r Region) String() string {
	if r.Size == 0 {
		return r.Name + " (no address range)"
	}
	s := fmt.Sprintf("%s [%#x, %#x)", r.Name, r.Start, r.Start+r.Size)
	if r.Mode != "" {
		s += " mode " + r.Mode
	}
	return s
}

// Regions lists the host's CXL regions and DAX devices with their address ranges, by
// name. A host without a CXL or DAX bus has none of that kind.
func (s *Sysfs) Regions() ([]Region, error) {
	regions, err := s.cxlRegions()
	if err != nil {
		return nil, err
	}
	devs, err := s.daxDevices()
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		regions = append(regions, Region{Name: d.name, Start: d.start, Size: d.size})
	}
	slices.SortFunc(regions, func(a, b Region) int { return strings.Compare(a.Name, b.Name) })
	return regions, nil
}

// cxlRegions reads /sys/bus/cxl/devices/regionN.
func (s *Sysfs) cxlRegions() ([]Region, error) {
	entries, err := s.cfg.FS.ReadDir(cxlDevicesDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list CXL devices: %w", err)
	}
	var regions []Region
	for _, e := range entries {
		id, ok := strings.CutPrefix(e.Name(), "region")
		if _, err := strconv.Atoi(id); !ok || err != nil {
			continue // a memdev, port, decoder, ...
		}
		r, err := s.cxlRegion(e.Name())
		if err != nil {
			return nil, err
		}
		regions = append(regions, r)
	}
	return regions, nil
}

// cxlRegion reads one CXL region. A region that has no address space yet (resource
// all ones, or size 0) is returned with size 0.
func (s *Sysfs) cxlRegion(name string) (Region, error) {
	dir := cxlDevicesDir + "/" + name
	start, err := s.readAddress(dir + "/resource")
	if err != nil {
		return Region{}, err
	}
	size, err := s.readAddress(dir + "/size")
	if err != nil {
		return Region{}, err
	}
	r := Region{Name: name, Start: start, Size: size}
	if start < 0 || size <= 0 {
		r.Start, r.Size = 0, 0
	}
	if mode, err := s.cfg.FS.ReadFile(dir + "/mode"); err == nil {
		r.Mode = strings.TrimSpace(string(mode))
	}
	return r, nil
}

// readAddress reads an unsigned number as the kernel prints addresses and sizes
// ("%#llx", or decimal). Values past the int64 range, such as the all-ones
// address of a region without one, read as -1.
func (s *Sysfs) readAddress(name string) (int64, error) {
	data, err := s.cfg.FS.ReadFile(name)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(data)), 0, 64)
	if err != nil {
		return 0, fmt.Errorf("read %s: %q is not a number", name, strings.TrimSpace(string(data)))
	}
	if v > math.MaxInt64 {
		return -1, nil
	}
	return int64(v), nil
}

// resolveRegions finds the region of every configured pool on the host: by name
// (cfg.Regions) or by the address where it starts (cfg.RegionBases, which must be
// the start of a region). Each error names the flag to fix.
func (s *Sysfs) resolveRegions() (map[string]Region, error) {
	if len(s.cfg.Regions) == 0 && len(s.cfg.RegionBases) == 0 {
		return nil, nil
	}
	host, err := s.Regions()
	if err != nil {
		return nil, fmt.Errorf("read the host's regions: %w", err)
	}
	found := map[string]Region{}
	var errs []error
	for _, pool := range sortedKeys(s.cfg.Regions) {
		name := s.cfg.Regions[pool]
		if _, both := s.cfg.RegionBases[pool]; both {
			errs = append(errs, fmt.Errorf("pool %s has both --region and --region-base: give one", pool))
			continue
		}
		i := slices.IndexFunc(host, func(r Region) bool { return r.Name == name })
		switch {
		case i < 0:
			errs = append(errs, fmt.Errorf("--region %s=%s: this host has no CXL region or DAX device %s (%s)", pool, name, name, describeRegions(host)))
		case host[i].Size == 0:
			errs = append(errs, fmt.Errorf("--region %s=%s: %s has no address range yet (size 0): create and commit the region first", pool, name, name))
		default:
			found[pool] = host[i]
		}
	}
	for _, pool := range sortedKeys(s.cfg.RegionBases) {
		if _, both := s.cfg.Regions[pool]; both {
			continue
		}
		base := s.cfg.RegionBases[pool]
		// Of the ranges starting there (a CXL region and the DAX devices in it), the
		// largest holds the others.
		var r Region
		for _, h := range host {
			if h.Start == base && h.Size > r.Size {
				r = h
			}
		}
		if r.Size == 0 {
			errs = append(errs, fmt.Errorf("--region-base %s=%#x: no CXL region or DAX device of this host starts at %#x (%s); correct the address, or name the region with --region %s=NAME", pool, base, base, describeRegions(host), pool))
			continue
		}
		found[pool] = r
	}
	for _, pool := range sortedKeys(found) {
		if r := found[pool]; r.Start%s.blockSize != 0 {
			errs = append(errs, fmt.Errorf("region %s of pool %s starts at %#x, which is not a multiple of the memory block size %#x: its memory cannot be onlined block by block", r.Name, pool, r.Start, s.blockSize))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return found, nil
}

// describeRegions lists the host's regions for an error message.
func describeRegions(host []Region) string {
	if len(host) == 0 {
		return "this host has none: nothing under " + cxlDevicesDir + "/regionN nor " + daxDevicesDir
	}
	names := make([]string, len(host))
	for i, r := range host {
		names[i] = r.String()
	}
	return "this host has " + strings.Join(names, ", ")
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// PoolRegions returns the region of each configured pool, as read at start.
func (s *Sysfs) PoolRegions() map[string]Region { return maps.Clone(s.regions) }

// region is the region of a request's pool. A pool with no configured region fails:
// the agent never guesses where memory is (address 0 is boot RAM).
func (s *Sysfs) region(req Request) (Region, error) {
	if req.Pool == "" {
		return Region{}, fmt.Errorf("claim %s: the command names no pool, so the region of its memory is unknown; nothing was touched", req.ClaimUID)
	}
	r, ok := s.regions[req.Pool]
	if !ok {
		return Region{}, fmt.Errorf("claim %s: pool %s has no region on this node; nothing was touched (start the node agent with --region %s=REGION, REGION being the CXL region or DAX device of this host that holds the pool's memory)", req.ClaimUID, req.Pool, req.Pool)
	}
	return r, nil
}

// within refuses extents that end past the end of their region: no block outside
// a pool's region is ever touched.
func within(req Request, r Region) error {
	for i, e := range req.Extents {
		if e.Length > r.Size-e.Offset {
			return fmt.Errorf("claim %s: extents[%d] = {offset %#x, length %#x} of pool %s ends at %#x, past the end of the pool's region %s (size %#x); nothing was touched", req.ClaimUID, i, e.Offset, e.Length, req.Pool, e.Offset+e.Length, r.Name, r.Size)
		}
	}
	return nil
}
