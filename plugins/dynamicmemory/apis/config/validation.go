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
	"net"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
)

// Validate checks defaulted args. Every error names its field under path.
func Validate(path *field.Path, args *DynamicMemoryArgs) field.ErrorList {
	var errs field.ErrorList
	if v := args.APIVersion; v != "" && v != SchemeGroupVersion.String() {
		errs = append(errs, field.Invalid(path.Child("apiVersion"), v, "must be "+SchemeGroupVersion.String()+" or empty"))
	}
	if args.Kind != "" && args.Kind != Kind {
		errs = append(errs, field.Invalid(path.Child("kind"), args.Kind, "must be "+Kind+" or empty"))
	}
	if strings.TrimSpace(args.Address) == "" {
		errs = append(errs, field.Required(path.Child("address"), "the memory service's gRPC address, for example "+deploy.MemoryServiceAddress))
	} else if !strings.HasPrefix(args.Address, "unix://") {
		if _, port, err := net.SplitHostPort(args.Address); err != nil || port == "" {
			errs = append(errs, field.Invalid(path.Child("address"), args.Address, "must be host:port or unix:///path"))
		}
	}
	for _, f := range []struct{ name, value, what string }{
		{"caFile", args.CAFile, "the CA bundle that signed the memory service's certificate"},
		{"certFile", args.CertFile, "the scheduler's client certificate (organization dynamicmemory.io:scheduler)"},
		{"keyFile", args.KeyFile, "the key of certFile"},
	} {
		if strings.TrimSpace(f.value) == "" {
			errs = append(errs, field.Required(path.Child(f.name), f.what))
		}
	}
	for _, d := range []struct {
		name  string
		value *metav1.Duration
	}{
		{"reserveTimeout", args.ReserveTimeout},
		{"releaseTimeout", args.ReleaseTimeout},
		{"permitTimeout", args.PermitTimeout},
		{"provisionTimeout", args.ProvisionTimeout},
	} {
		if d.value != nil && d.value.Duration <= 0 {
			errs = append(errs, field.Invalid(path.Child(d.name), d.value.Duration.String(), "must be positive, for example 5s"))
		}
	}
	if s := args.ScoringStrategy; s != nil {
		sp := path.Child("scoringStrategy")
		switch s.Type {
		case MostAllocated, LeastAllocated:
		default:
			errs = append(errs, field.NotSupported(sp.Child("type"), s.Type, []ScoringStrategyType{MostAllocated, LeastAllocated}))
		}
		if s.LocalityWeight < 0 || s.LocalityWeight > 100 {
			errs = append(errs, field.Invalid(sp.Child("localityWeight"), s.LocalityWeight, "must be between 0 and 100"))
		}
	}
	return errs
}
