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

// Package backend holds what every device backend of the memory service shares: the
// host extent type, and the errors a backend returns so that the service can
// tell a person what went wrong whatever the device. The interface a backend
// implements is defined where it is used (package provision).
package backend

import (
	"errors"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// HostExtent is an extent the device has given to a host, with its tag.
type HostExtent struct {
	HostID int32
	// Tag is the reservation's claim UID.
	Tag string
	v1alpha1.Extent
}

// Capacity is what a device reports about its dynamic capacity region.
type Capacity struct {
	// Bytes of the region.
	Bytes int64
	// BlockSize is the region's block size: extents must be aligned to it.
	BlockSize int64
}

// Errors of backends, wrapped with the device's own words.
var (
	// ErrMisaligned: an extent's offset or length is not a multiple of the block size.
	ErrMisaligned = errors.New("extent is not aligned to the region block size")
	// ErrOutOfRange: an extent lies outside the region.
	ErrOutOfRange = errors.New("extent lies outside the region")
	// ErrInUse: an extent overlaps one the device has given out.
	ErrInUse = errors.New("extent overlaps capacity in use")
	// ErrPending: the host has not accepted the extent yet, so it cannot be released.
	ErrPending = errors.New("extent is still pending on the host")
	// ErrNotFound: the device knows no such extent for that host and tag.
	ErrNotFound = errors.New("no such extent on the host")
	// ErrHostWindow: the host would hold more than its window.
	ErrHostWindow = errors.New("host window exceeded")
	// ErrNoDevice: the device the pool names does not exist (wrong device path or id):
	// nothing was done, and nothing can be known of its extents.
	ErrNoDevice = errors.New("no such device")
	// ErrUnavailable: the device does not answer (connection refused, timed out).
	ErrUnavailable = errors.New("device unavailable")
	// ErrNotSupported: the device cannot do this (e.g. list extents over QMP).
	ErrNotSupported = errors.New("not supported by the device")
	// ErrPartial: only some of the extents were added.
	ErrPartial = errors.New("extents only partly added")
	// ErrInjected: a fault injected by the simulated device.
	ErrInjected = errors.New("injected fault")
)
