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

package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// valid returns defaulted args that pass validation, changed by edit.
func valid(edit func(*DynamicMemoryArgs)) *DynamicMemoryArgs {
	args := &DynamicMemoryArgs{Address: "memservice:8443", CAFile: "ca.crt", CertFile: "s.crt", KeyFile: "s.key"}
	SetDefaults(args)
	if edit != nil {
		edit(args)
	}
	return args
}

func TestValidate(t *testing.T) {
	path := field.NewPath("args")
	tests := []struct {
		name string
		args *DynamicMemoryArgs
		// wantErrs are the errors' texts, in order; none: valid.
		wantErrs []string
	}{
		{name: "defaulted minimal args are valid", args: valid(nil)},
		{
			name: "apiVersion and kind of the scheduler configuration are valid",
			args: valid(func(a *DynamicMemoryArgs) {
				a.TypeMeta = metav1.TypeMeta{APIVersion: "kubescheduler.config.k8s.io/v1", Kind: "DynamicMemoryArgs"}
			}),
		},
		{
			name: "a unix socket address is valid",
			args: valid(func(a *DynamicMemoryArgs) { a.Address = "unix:///run/memservice.sock" }),
		},
		{
			name: "an explicit permit timeout is valid",
			args: valid(func(a *DynamicMemoryArgs) { a.PermitTimeout = &metav1.Duration{Duration: time.Minute} }),
		},
		{
			name:     "another apiVersion is named",
			args:     valid(func(a *DynamicMemoryArgs) { a.APIVersion = "dynamicmemory.io/v1alpha1" }),
			wantErrs: []string{`args.apiVersion: Invalid value: "dynamicmemory.io/v1alpha1": must be kubescheduler.config.k8s.io/v1 or empty`},
		},
		{
			name:     "another kind is named",
			args:     valid(func(a *DynamicMemoryArgs) { a.Kind = "NodeResourcesFitArgs" }),
			wantErrs: []string{`args.kind: Invalid value: "NodeResourcesFitArgs": must be DynamicMemoryArgs or empty`},
		},
		{
			name: "every required field is named",
			args: func() *DynamicMemoryArgs { a := &DynamicMemoryArgs{}; SetDefaults(a); return a }(),
			wantErrs: []string{
				"args.address: Required value: the memory service's gRPC address, for example memservice.dynamic-memory-system.svc:8443",
				"args.caFile: Required value",
				"args.certFile: Required value",
				"args.keyFile: Required value",
			},
		},
		{
			name:     "an address without port is named",
			args:     valid(func(a *DynamicMemoryArgs) { a.Address = "memservice" }),
			wantErrs: []string{`args.address: Invalid value: "memservice": must be host:port or unix:///path`},
		},
		{
			name: "each timeout that is not positive is named",
			args: valid(func(a *DynamicMemoryArgs) {
				a.ReserveTimeout = &metav1.Duration{}
				a.ReleaseTimeout = &metav1.Duration{Duration: -time.Second}
				a.PermitTimeout = &metav1.Duration{}
				a.ProvisionTimeout = &metav1.Duration{}
			}),
			wantErrs: []string{
				`args.reserveTimeout: Invalid value: "0s": must be positive, for example 5s`,
				`args.releaseTimeout: Invalid value: "-1s": must be positive`,
				`args.permitTimeout: Invalid value: "0s"`,
				`args.provisionTimeout: Invalid value: "0s"`,
			},
		},
		{
			name: "an unknown strategy and a weight out of range are named",
			args: valid(func(a *DynamicMemoryArgs) { a.ScoringStrategy = &ScoringStrategy{Type: "Random", LocalityWeight: 101} }),
			wantErrs: []string{
				`args.scoringStrategy.type: Unsupported value: "Random": supported values: "MostAllocated", "LeastAllocated"`,
				"args.scoringStrategy.localityWeight: Invalid value: 101: must be between 0 and 100",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errs := Validate(path, tc.args)
			if assert.Len(t, errs, len(tc.wantErrs), "errors: %v", errs) {
				for i, want := range tc.wantErrs {
					assert.Contains(t, errs[i].Error(), want)
				}
			}
		})
	}
}

func TestSetDefaults(t *testing.T) {
	args := &DynamicMemoryArgs{ScoringStrategy: &ScoringStrategy{LocalityWeight: 30}}
	SetDefaults(args)
	assert.Equal(t, &DynamicMemoryArgs{
		ReserveTimeout:   &metav1.Duration{Duration: DefaultReserveTimeout},
		ReleaseTimeout:   &metav1.Duration{Duration: DefaultReleaseTimeout},
		ProvisionTimeout: &metav1.Duration{Duration: DefaultProvisionTimeout},
		ScoringStrategy:  &ScoringStrategy{Type: MostAllocated, LocalityWeight: 30},
	}, args, "unset fields get their defaults, set ones are kept; permitTimeout stays unset")
}

func TestDeepCopyCopiesPointers(t *testing.T) {
	args := valid(func(a *DynamicMemoryArgs) { a.PermitTimeout = &metav1.Duration{Duration: time.Minute} })
	out := args.DeepCopy()
	assert.Equal(t, args, out)
	out.ReserveTimeout.Duration, out.PermitTimeout.Duration, out.ScoringStrategy.LocalityWeight = 1, 1, 1
	assert.Equal(t, DefaultReserveTimeout, args.ReserveTimeout.Duration)
	assert.Equal(t, time.Minute, args.PermitTimeout.Duration)
	assert.Zero(t, args.ScoringStrategy.LocalityWeight)
}
