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

package simulated_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/backend/simulated"
)

const gi = int64(1) << 30

func newDevice(t *testing.T, f simulated.Faults) (*simulated.Device, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	d, err := simulated.New(simulated.Config{Capacity: 8 * gi, BlockSize: gi, HostWindow: 4 * gi, Faults: f, Seed: 42, Clock: clk})
	require.NoError(t, err)
	return d, clk
}

func TestAddAndReleaseCheckTheDevicesRules(t *testing.T) {
	d, _ := newDevice(t, simulated.Faults{})
	ctx := context.Background()
	require.NoError(t, d.Add(ctx, 0, "a", []v1alpha1.Extent{{Offset: 0, Length: 2 * gi}}))
	require.NoError(t, d.Add(ctx, 0, "a", []v1alpha1.Extent{{Offset: 0, Length: 2 * gi}}), "adding the same extents again is a no-op")

	tests := []struct {
		name string
		err  error
		want error
	}{
		{"misaligned", d.Add(ctx, 1, "b", []v1alpha1.Extent{{Offset: 1000, Length: gi}}), backend.ErrMisaligned},
		{"outside the region", d.Add(ctx, 1, "b", []v1alpha1.Extent{{Offset: 8 * gi, Length: gi}}), backend.ErrOutOfRange},
		{"overlapping another host's extent", d.Add(ctx, 1, "b", []v1alpha1.Extent{{Offset: gi, Length: gi}}), backend.ErrInUse},
		{"over the host window", d.Add(ctx, 0, "c", []v1alpha1.Extent{{Offset: 2 * gi, Length: 3 * gi}}), backend.ErrHostWindow},
		{"releasing another host's extent", d.Release(ctx, 1, "b", []v1alpha1.Extent{{Offset: 0, Length: gi}}), backend.ErrInUse},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { assert.ErrorIs(t, tc.err, tc.want) })
	}

	require.NoError(t, d.Release(ctx, 0, "a", []v1alpha1.Extent{{Offset: gi, Length: gi}}), "part of an extent can be released")
	list, err := d.List(ctx)
	require.NoError(t, err)
	assert.Equal(t, []backend.HostExtent{{HostID: 0, Tag: "a", Extent: v1alpha1.Extent{Offset: 0, Length: gi}}}, list)
	require.NoError(t, d.Release(ctx, 0, "a", []v1alpha1.Extent{{Offset: 0, Length: 2 * gi}}), "releasing what is gone is a no-op")
	list, _ = d.List(ctx)
	assert.Empty(t, list)
}

func TestFaultsAreInjected(t *testing.T) {
	ctx := context.Background()
	ext := []v1alpha1.Extent{{Offset: 0, Length: gi}}

	t.Run("fail N percent, reproducibly from the seed", func(t *testing.T) {
		count := func() int {
			d, _ := newDevice(t, simulated.Faults{FailPercent: 30})
			failed := 0
			for range 200 {
				if err := d.Add(ctx, 0, "a", ext); err != nil {
					assert.ErrorIs(t, err, backend.ErrInjected)
					failed++
				}
			}
			return failed
		}
		first := count()
		assert.InDelta(t, 60, first, 25)
		assert.Equal(t, first, count(), "the same seed fails the same operations")
	})

	t.Run("hang until the context ends", func(t *testing.T) {
		d, _ := newDevice(t, simulated.Faults{Hang: true})
		hctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		assert.ErrorIs(t, d.Add(hctx, 0, "a", ext), backend.ErrUnavailable)
	})

	t.Run("partial add gives the first block only", func(t *testing.T) {
		d, _ := newDevice(t, simulated.Faults{Partial: true})
		err := d.Add(ctx, 0, "a", []v1alpha1.Extent{{Offset: 0, Length: 3 * gi}})
		assert.ErrorIs(t, err, backend.ErrPartial)
		list, _ := d.List(ctx)
		assert.Equal(t, []backend.HostExtent{{HostID: 0, Tag: "a", Extent: v1alpha1.Extent{Offset: 0, Length: gi}}}, list)
	})

	t.Run("latency follows the clock", func(t *testing.T) {
		d, clk := newDevice(t, simulated.Faults{AddLatency: time.Second})
		done := make(chan error, 1)
		go func() { done <- d.Add(ctx, 0, "a", ext) }()
		require.Eventually(t, clk.HasWaiters, time.Second, time.Millisecond)
		select {
		case <-done:
			t.Fatal("add returned before its latency passed")
		default:
		}
		clk.Step(time.Second)
		require.NoError(t, <-done)
	})
}

func TestAdoptRestoresExtentsAfterARestart(t *testing.T) {
	d, _ := newDevice(t, simulated.Faults{})
	held := []backend.HostExtent{{HostID: 1, Tag: "a", Extent: v1alpha1.Extent{Offset: 2 * gi, Length: gi}}}
	require.NoError(t, d.Adopt(held))
	require.NoError(t, d.Adopt(held), "adopting twice is a no-op")
	list, _ := d.List(context.Background())
	assert.Equal(t, held, list)
	assert.ErrorIs(t, d.Adopt([]backend.HostExtent{{HostID: 2, Tag: "b", Extent: v1alpha1.Extent{Offset: 2 * gi, Length: gi}}}), backend.ErrInUse)
}

func TestConfigIsValidated(t *testing.T) {
	_, err := simulated.New(simulated.Config{Capacity: 3, BlockSize: 2})
	assert.ErrorContains(t, err, "must be a positive multiple of the block size")
	_, err = simulated.New(simulated.Config{Capacity: 4, BlockSize: 2, Faults: simulated.Faults{FailPercent: 101}})
	assert.ErrorContains(t, err, "failPercent must be 0 to 100, got 101")
}
