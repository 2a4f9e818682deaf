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

package service

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
)

func TestTheLeaseGuardHoldsFromARenewalForTheLeaseDuration(t *testing.T) {
	ctx := context.Background()
	start := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(start)
	kube := fake.NewClientset()
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, "dynamic-memory-system", "memservice",
		kube.CoreV1(), kube.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: "a"})
	require.NoError(t, err)
	hold := newLeaseHold(lock, clk, 15*time.Second)
	record := func(holder string) resourcelock.LeaderElectionRecord {
		return resourcelock.LeaderElectionRecord{HolderIdentity: holder, LeaseDurationSeconds: 15,
			AcquireTime: metav1.NewTime(clk.Now()), RenewTime: metav1.NewTime(clk.Now())}
	}
	held := func(at time.Duration) error {
		clk.SetTime(start.Add(at))
		return hold.Check()
	}
	fenced := func(t *testing.T, err error, msg string) {
		t.Helper()
		require.Error(t, err, msg)
		assert.ErrorIs(t, err, provision.ErrFenced)
		assert.Contains(t, err.Error(), "dynamic-memory-system/memservice")
	}

	fenced(t, hold.Check(), "not held before it is acquired")

	require.NoError(t, hold.Create(ctx, record("a")))
	assert.NoError(t, held(14*time.Second+999*time.Millisecond))
	fenced(t, held(15*time.Second), "runs out a lease duration after it was acquired")

	clk.SetTime(start.Add(10 * time.Second))
	require.NoError(t, hold.Update(ctx, record("a")))
	assert.NoError(t, held(24*time.Second), "renewed at 10s")
	fenced(t, held(25*time.Second), "runs out a lease duration after the renewal")

	t.Run("from when the renewal was sent, not when it was answered", func(t *testing.T) {
		kube.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
			clk.SetTime(clk.Now().Add(5 * time.Second)) // a slow API server
			return false, nil, nil
		})
		defer func() { kube.ReactionChain = kube.ReactionChain[1:] }()
		clk.SetTime(start.Add(30 * time.Second))
		require.NoError(t, hold.Update(ctx, record("a")))
		assert.NoError(t, held(44*time.Second))
		fenced(t, held(45*time.Second), "sent at 30s")
	})

	t.Run("a failed renewal leaves the hold to run out", func(t *testing.T) {
		clk.SetTime(start.Add(50 * time.Second))
		require.NoError(t, hold.Update(ctx, record("a")))
		kube.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("connection refused")
		})
		defer func() { kube.ReactionChain = kube.ReactionChain[1:] }()
		clk.SetTime(start.Add(60 * time.Second))
		require.Error(t, hold.Update(ctx, record("a")))
		assert.NoError(t, held(64*time.Second), "still within the renewal of 50s")
		fenced(t, held(65*time.Second), "not renewed at 60s")
	})

	t.Run("released on a graceful stop", func(t *testing.T) {
		clk.SetTime(start.Add(70 * time.Second))
		require.NoError(t, hold.Update(ctx, record("a")))
		require.NoError(t, hold.Update(ctx, record("")))
		fenced(t, held(71*time.Second), "the Lease names nobody")
	})

	t.Run("ends when the elector sees another holder", func(t *testing.T) {
		clk.SetTime(start.Add(80 * time.Second))
		require.NoError(t, hold.Update(ctx, record("a")))
		leader := true
		hold.follow(func() bool { return leader })
		assert.NoError(t, held(81*time.Second))
		leader = false
		fenced(t, held(81*time.Second), "the Lease names b")
		assert.Contains(t, hold.Check().Error(), "names another holder")
		hold.follow(nil)
	})

	t.Run("ends when the elector stops leading", func(t *testing.T) {
		clk.SetTime(start.Add(90 * time.Second))
		require.NoError(t, hold.Update(ctx, record("a")))
		hold.lose()
		fenced(t, held(91*time.Second), "stopped leading")
	})
}

func TestALeaderIdentityMustFitTheFieldManagerOfItsWrites(t *testing.T) {
	for _, tc := range []struct {
		length  int
		wantErr string
	}{
		{length: 117},
		{length: 118, wantErr: "leaderElection.identity must be at most 117 characters (it names the leader in every record write), got 118"},
	} {
		cfg := Config{RESTConfig: &rest.Config{}, ListenAddress: "127.0.0.1:0"}
		cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile = "ca.crt", "server.crt", "server.key"
		cfg.LeaderElection.Enabled = true
		cfg.LeaderElection.Namespace, cfg.LeaderElection.Name = "dynamic-memory-system", "memservice"
		cfg.LeaderElection.Identity = strings.Repeat("a", tc.length)
		err := cfg.validate()
		if tc.wantErr == "" {
			assert.NoError(t, err, "%d characters", tc.length)
		} else {
			assert.EqualError(t, err, tc.wantErr)
		}
	}
}
