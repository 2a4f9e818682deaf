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
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
)

// decodeArgs reads the plugin's args from the scheduler configuration, defaulted and
// validated. Unknown fields are errors, so that a misspelled field does not silently
// fall back to a default. path locates the args in the configuration, for error
// messages.
func decodeArgs(path *field.Path, obj runtime.Object) (*config.DynamicMemoryArgs, error) {
	args := &config.DynamicMemoryArgs{}
	switch a := obj.(type) {
	case nil:
	case *config.DynamicMemoryArgs:
		args = a.DeepCopy()
	case *runtime.Unknown:
		if len(a.Raw) > 0 {
			if err := yaml.UnmarshalStrict(a.Raw, args); err != nil {
				return nil, fmt.Errorf("decode %s: %w", path, err)
			}
		}
	default:
		return nil, fmt.Errorf("decode %s: want %s, got %T", path, config.Kind, obj)
	}
	config.SetDefaults(args)
	if err := config.Validate(path, args).ToAggregate(); err != nil {
		return nil, fmt.Errorf("invalid %s args: %w", Name, err)
	}
	return args, nil
}

// checkFiles reports TLS files the scheduler cannot read, by field.
func checkFiles(path *field.Path, args *config.DynamicMemoryArgs) field.ErrorList {
	var errs field.ErrorList
	for _, f := range []struct{ name, file string }{
		{"caFile", args.CAFile}, {"certFile", args.CertFile}, {"keyFile", args.KeyFile},
	} {
		if _, err := os.ReadFile(f.file); err != nil {
			errs = append(errs, field.Invalid(path.Child(f.name), f.file, err.Error()))
		}
	}
	return errs
}
