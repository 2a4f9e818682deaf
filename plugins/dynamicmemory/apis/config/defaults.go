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
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of DynamicMemoryArgs.
const (
	DefaultReserveTimeout   = 5 * time.Second
	DefaultReleaseTimeout   = 5 * time.Second
	DefaultProvisionTimeout = 2 * time.Minute
)

// SetDefaults fills in the optional fields. PermitTimeout stays unset: its default
// depends on the pod (see DynamicMemoryArgs.PermitTimeout).
func SetDefaults(args *DynamicMemoryArgs) {
	if args.ReserveTimeout == nil {
		args.ReserveTimeout = &metav1.Duration{Duration: DefaultReserveTimeout}
	}
	if args.ReleaseTimeout == nil {
		args.ReleaseTimeout = &metav1.Duration{Duration: DefaultReleaseTimeout}
	}
	if args.ProvisionTimeout == nil {
		args.ProvisionTimeout = &metav1.Duration{Duration: DefaultProvisionTimeout}
	}
	if args.ScoringStrategy == nil {
		args.ScoringStrategy = &ScoringStrategy{}
	}
	if args.ScoringStrategy.Type == "" {
		args.ScoringStrategy.Type = MostAllocated
	}
}
