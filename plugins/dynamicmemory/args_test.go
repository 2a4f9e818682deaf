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

package dynamicmemory

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
)

func TestDecodeArgs(t *testing.T) {
	path := field.NewPath("profiles").Key("dynamic-memory-scheduler").Child("pluginConfig").Key(Name).Child("args")
	tests := []struct {
		name    string
		raw     string
		want    *config.DynamicMemoryArgs
		wantErr []string
	}{
		{
			name: "minimal args get the defaults",
			raw:  `{"address":"memservice:8443","caFile":"ca","certFile":"crt","keyFile":"key"}`,
			want: &config.DynamicMemoryArgs{
				Address: "memservice:8443", CAFile: "ca", CertFile: "crt", KeyFile: "key",
				ReserveTimeout:   &metav1.Duration{Duration: config.DefaultReserveTimeout},
				ReleaseTimeout:   &metav1.Duration{Duration: config.DefaultReleaseTimeout},
				ProvisionTimeout: &metav1.Duration{Duration: config.DefaultProvisionTimeout},
				ScoringStrategy:  &config.ScoringStrategy{Type: config.MostAllocated},
			},
		},
		{
			name: "every field set, as YAML with apiVersion and kind",
			raw: `apiVersion: kubescheduler.config.k8s.io/v1
kind: DynamicMemoryArgs
address: unix:///run/memservice.sock
caFile: ca
certFile: crt
keyFile: key
serverName: memservice
reserveTimeout: 2s
releaseTimeout: 3s
permitTimeout: 20s
provisionTimeout: 30s
scoringStrategy: {type: LeastAllocated, localityWeight: 40}`,
			want: &config.DynamicMemoryArgs{
				TypeMeta: metav1.TypeMeta{APIVersion: "kubescheduler.config.k8s.io/v1", Kind: "DynamicMemoryArgs"},
				Address:  "unix:///run/memservice.sock", CAFile: "ca", CertFile: "crt", KeyFile: "key", ServerName: "memservice",
				ReserveTimeout:   &metav1.Duration{Duration: 2 * time.Second},
				ReleaseTimeout:   &metav1.Duration{Duration: 3 * time.Second},
				PermitTimeout:    &metav1.Duration{Duration: 20 * time.Second},
				ProvisionTimeout: &metav1.Duration{Duration: 30 * time.Second},
				ScoringStrategy:  &config.ScoringStrategy{Type: config.LeastAllocated, LocalityWeight: 40},
			},
		},
		{
			name:    "no args at all names every required field",
			raw:     ``,
			wantErr: []string{path.Child("address").String() + ": Required value", path.Child("caFile").String() + ": Required value", path.Child("certFile").String(), path.Child("keyFile").String()},
		},
		{
			name:    "misspelled field is refused, not ignored",
			raw:     `{"adress":"memservice:8443"}`,
			wantErr: []string{path.String(), `unknown field "adress"`},
		},
		{
			name:    "address without port",
			raw:     `{"address":"memservice","caFile":"ca","certFile":"crt","keyFile":"key"}`,
			wantErr: []string{path.Child("address").String() + `: Invalid value: "memservice": must be host:port or unix:///path`},
		},
		{
			name:    "zero timeouts",
			raw:     `{"address":"m:1","caFile":"ca","certFile":"crt","keyFile":"key","reserveTimeout":"0s","releaseTimeout":"0s","permitTimeout":"0s","provisionTimeout":"-1s"}`,
			wantErr: []string{path.Child("reserveTimeout").String() + `: Invalid value: "0s": must be positive`, path.Child("releaseTimeout").String(), path.Child("permitTimeout").String(), path.Child("provisionTimeout").String()},
		},
		{
			name:    "unknown strategy and weight out of range",
			raw:     `{"address":"m:1","caFile":"ca","certFile":"crt","keyFile":"key","scoringStrategy":{"type":"Random","localityWeight":101}}`,
			wantErr: []string{path.Child("scoringStrategy", "type").String() + `: Unsupported value: "Random": supported values: "MostAllocated", "LeastAllocated"`, path.Child("scoringStrategy", "localityWeight").String() + ": Invalid value: 101: must be between 0 and 100"},
		},
		{
			name:    "wrong kind",
			raw:     `{"kind":"NodeResourcesFitArgs","address":"m:1","caFile":"ca","certFile":"crt","keyFile":"key"}`,
			wantErr: []string{path.Child("kind").String() + `: Invalid value: "NodeResourcesFitArgs"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var obj runtime.Object = &runtime.Unknown{Raw: []byte(tc.raw)}
			got, err := decodeArgs(path, obj)
			if len(tc.wantErr) > 0 {
				require.Error(t, err)
				for _, want := range tc.wantErr {
					assert.Contains(t, err.Error(), want)
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestCheckFilesNamesTheUnreadableFile(t *testing.T) {
	dir := t.TempDir()
	args := testArgs()
	args.CAFile = dir + "/missing-ca.crt"
	args.CertFile, args.KeyFile = dir, dir // directories cannot be read as files
	errs := checkFiles(field.NewPath("args"), args)
	require.Len(t, errs, 3)
	assert.Contains(t, errs[0].Error(), "args.caFile: Invalid value: \""+dir+"/missing-ca.crt\"")
	assert.Contains(t, errs[0].Error(), "no such file or directory")
	assert.Contains(t, errs[1].Error(), "args.certFile")
	assert.Contains(t, errs[2].Error(), "args.keyFile")
}
