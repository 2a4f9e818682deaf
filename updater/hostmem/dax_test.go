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
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	testingclock "k8s.io/utils/clock/testing"
)

func TestSysfsDAXDeviceBecomesSystemRAMAndBack(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize)
	// The region starts at block 8; dax0.0 holds its first four blocks.
	k.addDAXDevice("dax0.0", 8*fakeBlockSize, 4*fakeBlockSize, driverDevDAX)
	k.addDAXDevice("dax1.0", 64*fakeBlockSize, 4*fakeBlockSize, driverDevDAX)
	k.onBind = func(driver, device string) {
		if driver == driverKmem && device == "dax0.0" {
			for n := 8; n < 12; n++ {
				k.addBlock(n, stateOffline, 1)
			}
		}
	}
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))

	res, err := s.Online(context.Background(), twoBlocks, nil)
	require.NoError(t, err)
	assert.Equal(t, Result{Blocks: []int{8, 9}, NUMANodes: []int32{1}, Bytes: 2 * fakeBlockSize}, res)
	assert.Equal(t, driverKmem, k.driverOf("dax0.0"))
	assert.Equal(t, driverDevDAX, k.driverOf("dax1.0"), "a device holding no extent of the claim is left alone")
	assert.Equal(t, []string{
		"/sys/bus/dax/drivers/device_dax/unbind=dax0.0",
		"/sys/bus/dax/drivers/kmem/new_id=dax0.0",
		"/sys/devices/system/memory/memory8/state=online_movable",
		"/sys/devices/system/memory/memory9/state=online_movable",
	}, k.written())

	// Onlining again is refused unless it resumes the claim's own onlining; either
	// way the device is not touched: it is system RAM already.
	before := len(k.written())
	_, err = s.Online(context.Background(), twoBlocks, nil)
	require.ErrorIs(t, err, ErrOnlineNotOurs)
	resume := twoBlocks
	resume.Resume = true
	_, err = s.Online(context.Background(), resume, nil)
	require.NoError(t, err)
	assert.Len(t, k.written(), before)

	require.NoError(t, s.Offline(context.Background(), twoBlocks, nil))
	assert.Equal(t, []string{
		"/sys/devices/system/memory/memory9/state=offline",
		"/sys/devices/system/memory/memory8/state=offline",
		"/sys/bus/dax/drivers/kmem/unbind=dax0.0",
		"/sys/bus/dax/drivers/device_dax/bind=dax0.0",
	}, k.written()[before:])
	assert.Equal(t, driverDevDAX, k.driverOf("dax0.0"))
}

func TestSysfsDAXDeviceWithoutDriverIsBound(t *testing.T) {
	k := newFakeKernel(t, fakeBlockSize, 8, 9)
	k.addDAXDevice("dax0.0", 8*fakeBlockSize, 2*fakeBlockSize, "")
	s := newTestSysfs(t, k, testingclock.NewFakeClock(time.Now()))
	_, err := s.Online(context.Background(), twoBlocks, nil)
	require.NoError(t, err)
	assert.Equal(t, driverKmem, k.driverOf("dax0.0"))
	assert.Equal(t, "/sys/bus/dax/drivers/kmem/new_id=dax0.0", k.written()[0])
}
