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

package kubectlplugin

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clienttesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/version"
)

// memserviceLease is the memory service's Lease as an instance holding it writes it:
// renewed renewedAgo before now, with the version label when serverVersion is set.
func memserviceLease(holder, serverVersion string, renewedAgo time.Duration) *coordinationv1.Lease {
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: deploy.Namespace, Name: deploy.MemoryServiceName},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(holder),
			LeaseDurationSeconds: ptr.To[int32](15),
			RenewTime:            &metav1.MicroTime{Time: now.Add(-renewedAgo)},
		},
	}
	if serverVersion != "" {
		lease.Labels = map[string]string{deploy.VersionLabel: serverVersion}
	}
	return lease
}

func TestVersion(t *testing.T) {
	clientVersion := version.Version
	t.Cleanup(func() { version.Version = clientVersion })
	version.Version = "v0.3.0"

	tests := []struct {
		name    string
		args    []string
		lease   *coordinationv1.Lease
		prepare func(*fakeCluster)
		out     string
		errOut  string
		err     string
	}{
		{
			name:  "a running memory service of the same release",
			lease: memserviceLease("memservice-7d9f-x2k9p", "v0.3.1", 3*time.Second),
			out:   "Client Version: v0.3.0\nServer Version: v0.3.1 (memory service instance memservice-7d9f-x2k9p)\n",
		},
		{
			name:   "an older memory service",
			lease:  memserviceLease("memservice-7d9f-x2k9p", "v0.2.4", time.Second),
			out:    "Client Version: v0.3.0\nServer Version: v0.2.4 (memory service instance memservice-7d9f-x2k9p)\n",
			errOut: "Warning: the memory service (v0.2.4) is an older release than this plugin (v0.3.0): upgrade it, or use the plugin of its release.\n",
		},
		{
			name:  "a development build is not compared",
			lease: memserviceLease("memservice-0", "dev", time.Second),
			out:   "Client Version: v0.3.0\nServer Version: dev (memory service instance memservice-0)\n",
		},
		{
			name: "the client only",
			args: []string{"--client"},
			out:  "Client Version: v0.3.0\n",
		},
		{
			name: "no Lease",
			out:  "Client Version: v0.3.0\n",
			err:  "the memory service is unreachable: its Lease dynamic-memory-system/memservice does not exist, so no instance has ever run with leader election in this cluster (is it installed? kubectl get deployment -n dynamic-memory-system)",
		},
		{
			name:  "a Lease nobody renewed for a minute",
			lease: memserviceLease("memservice-7d9f-x2k9p", "v0.3.0", time.Minute),
			out:   "Client Version: v0.3.0\n",
			err:   "the memory service is unreachable: no instance holds its Lease dynamic-memory-system/memservice (last renewed 60s ago, by version v0.3.0); check its pods: kubectl get pods -n dynamic-memory-system",
		},
		{
			name:  "a Lease released on shutdown",
			lease: memserviceLease("", "v0.3.0", 5*time.Minute),
			out:   "Client Version: v0.3.0\n",
			err:   "the memory service is unreachable: no instance holds its Lease dynamic-memory-system/memservice (last renewed 5m ago, by version v0.3.0); check its pods: kubectl get pods -n dynamic-memory-system",
		},
		{
			name:  "a memory service from before the version label",
			lease: memserviceLease("memservice-old", "", time.Second),
			out:   "Client Version: v0.3.0\n",
			err:   "the memory service instance memservice-old is too old to report its version (its Lease dynamic-memory-system/memservice has no dynamicmemory.io/version label): upgrade it to this plugin's version, v0.3.0",
		},
		{
			name: "not allowed to read the Lease",
			prepare: func(c *fakeCluster) {
				c.kube.PrependReactor("get", "leases", func(clienttesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, deploy.MemoryServiceName,
						errors.New(`User "alice" cannot get resource "leases" in API group "coordination.k8s.io" in the namespace "dynamic-memory-system"`))
				})
			},
			out: "Client Version: v0.3.0\n",
			err: `cannot read the memory service's version: you may not get the Lease dynamic-memory-system/memservice (the version command needs get on leases in namespace dynamic-memory-system): leases.coordination.k8s.io "memservice" is forbidden: User "alice" cannot get resource "leases" in API group "coordination.k8s.io" in the namespace "dynamic-memory-system"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newFakeCluster(t, true)
			if tc.lease != nil {
				_, err := c.kube.CoordinationV1().Leases(deploy.Namespace).Create(context.Background(), tc.lease, metav1.CreateOptions{})
				require.NoError(t, err)
			}
			if tc.prepare != nil {
				tc.prepare(c)
			}
			out, errOut, err := c.run(t, append([]string{"version"}, tc.args...)...)
			assert.Equal(t, tc.out, out)
			assert.Equal(t, tc.errOut, errOut)
			if tc.err == "" {
				assert.NoError(t, err)
			} else {
				require.Error(t, err)
				assert.Equal(t, tc.err, err.Error())
			}
		})
	}
}
