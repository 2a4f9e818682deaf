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
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"syscall"

	"k8s.io/klog/v2"
)

// DAX: on a CXL host, the memory a Dynamic Capacity Device adds shows up in a DAX
// region and is handed out as DAX devices (/sys/bus/dax/devices/daxX.Y), bound by
// default to the device_dax driver (a character device for mmap). To make it system
// RAM the kernel's kmem driver must own the device: what `daxctl reconfigure-device
// --mode=system-ram` does is
//
//	echo daxX.Y > /sys/bus/dax/drivers/device_dax/unbind
//	echo daxX.Y > /sys/bus/dax/drivers/kmem/new_id
//	echo daxX.Y > /sys/bus/dax/drivers/kmem/bind     (if new_id did not bind it)
//
// kmem then hot-adds the range: new memoryN blocks appear, offline (this host has
// auto_online_blocks=offline) and are onlined by the agent as movable. Giving the
// memory back is the reverse: offline every block, then unbind from kmem (which
// hot-removes the range) and bind to device_dax again.
//
// Memory that arrives without a DAX device (ACPI hotplug, or a simulated tree) is
// handled by waiting for its blocks only.
const (
	daxDevicesDir = "/sys/bus/dax/devices"
	daxDriversDir = "/sys/bus/dax/drivers"
	driverKmem    = "kmem"
	driverDevDAX  = "device_dax"
)

// addrRange is a host physical address range [start, end).
type addrRange struct{ start, end int64 }

type daxDevice struct {
	name   string
	start  int64
	size   int64
	driver string
}

func (d daxDevice) covers(r addrRange) bool {
	return d.start <= r.start && r.end <= d.start+d.size
}

// daxDevices lists the DAX devices of the host. No DAX bus means none.
func (s *Sysfs) daxDevices() ([]daxDevice, error) {
	entries, err := s.cfg.FS.ReadDir(daxDevicesDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list DAX devices: %w", err)
	}
	var devs []daxDevice
	for _, e := range entries {
		dir := daxDevicesDir + "/" + e.Name()
		start, err := s.readInt(dir+"/resource", 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a region or a device without a physical range
		}
		if err != nil {
			return nil, err
		}
		size, err := s.readInt(dir+"/size", 10)
		if err != nil {
			return nil, err
		}
		dev := daxDevice{name: e.Name(), start: start, size: size}
		if link, err := s.cfg.FS.Readlink(dir + "/driver"); err == nil {
			dev.driver = path.Base(link)
		}
		devs = append(devs, dev)
	}
	return devs, nil
}

// readInt reads a number from a sysfs attribute; base 0 accepts the 0x prefix.
func (s *Sysfs) readInt(name string, base int) (int64, error) {
	data, err := s.cfg.FS.ReadFile(name)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(data)), base, 64)
	if err != nil {
		return 0, fmt.Errorf("read %s: %q is not a number", name, strings.TrimSpace(string(data)))
	}
	return v, nil
}

// devicesFor returns the DAX devices that hold the ranges, each once.
func (s *Sysfs) devicesFor(ranges []addrRange) ([]daxDevice, error) {
	devs, err := s.daxDevices()
	if err != nil || len(devs) == 0 {
		return nil, err
	}
	var found []daxDevice
	for _, r := range ranges {
		for _, d := range devs {
			if d.covers(r) {
				if !containsDevice(found, d.name) {
					found = append(found, d)
				}
				break
			}
		}
	}
	return found, nil
}

func containsDevice(devs []daxDevice, name string) bool {
	for _, d := range devs {
		if d.name == name {
			return true
		}
	}
	return false
}

// attachDAX hands the DAX devices holding the ranges to the kmem driver.
func (s *Sysfs) attachDAX(ctx context.Context, ranges []addrRange) error {
	devs, err := s.devicesFor(ranges)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if d.driver == driverKmem {
			continue
		}
		klog.FromContext(ctx).V(2).Info("Reconfiguring DAX device to system RAM", "device", d.name, "driver", d.driver, "start", fmt.Sprintf("%#x", d.start), "size", d.size)
		if d.driver != "" {
			if err := s.writeDriver(d.driver, "unbind", d.name); err != nil {
				return err
			}
		}
		if err := s.writeDriver(driverKmem, "new_id", d.name); err != nil && !errors.Is(err, syscall.EEXIST) {
			return err
		}
		if link, err := s.cfg.FS.Readlink(daxDevicesDir + "/" + d.name + "/driver"); err == nil && path.Base(link) == driverKmem {
			continue
		}
		if err := s.writeDriver(driverKmem, "bind", d.name); err != nil && !errors.Is(err, syscall.EBUSY) {
			return err
		}
	}
	return nil
}

// detachDAX gives DAX devices owned by kmem back to device_dax, which removes
// their (offline) memory from the system.
func (s *Sysfs) detachDAX(ctx context.Context, ranges []addrRange) error {
	devs, err := s.devicesFor(ranges)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if d.driver != driverKmem {
			continue
		}
		klog.FromContext(ctx).V(2).Info("Returning DAX device to device_dax", "device", d.name)
		if err := s.writeDriver(driverKmem, "unbind", d.name); err != nil {
			return err
		}
		if err := s.writeDriver(driverDevDAX, "bind", d.name); err != nil {
			return err
		}
	}
	return nil
}

func (s *Sysfs) writeDriver(driver, attr, device string) error {
	name := daxDriversDir + "/" + driver + "/" + attr
	if err := s.cfg.FS.WriteFile(name, []byte(device)); err != nil {
		return fmt.Errorf("write %s to %s: %w", device, name, err)
	}
	return nil
}
