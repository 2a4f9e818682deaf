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
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"k8s.io/client-go/rest"
)

func TestConfigValidatesIntervals(t *testing.T) {
	for _, tc := range []struct {
		name               string
		poolStatusInterval time.Duration
		snapshotInterval   time.Duration
		wantErr            string
	}{
		{name: "defaults"},
		{name: "the least pool status interval", poolStatusInterval: MinPoolStatusInterval},
		{name: "a pool status interval below the least", poolStatusInterval: 99 * time.Millisecond, wantErr: "poolStatusInterval must be at least 100ms, got 99ms"},
		{name: "a negative pool status interval", poolStatusInterval: -time.Second, wantErr: "poolStatusInterval must be at least 100ms, got -1s"},
		{name: "a short snapshot interval", snapshotInterval: time.Millisecond},
		{name: "a negative snapshot interval", snapshotInterval: -time.Millisecond, wantErr: "snapshotInterval must not be negative, got -1ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{RESTConfig: &rest.Config{}, ListenAddress: "127.0.0.1:0",
				PoolStatusInterval: tc.poolStatusInterval, SnapshotInterval: tc.snapshotInterval}
			cfg.TLS.CAFile, cfg.TLS.CertFile, cfg.TLS.KeyFile = "ca.crt", "server.crt", "server.key"
			err := cfg.validate()
			if tc.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tc.wantErr)
		})
	}
}
