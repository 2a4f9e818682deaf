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

package deploy

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestVersionLabelValue(t *testing.T) {
	for version, want := range map[string]string{
		"v0.3.0":                             "v0.3.0",
		"v0.3.0-2-gdb1976f-dirty":            "v0.3.0-2-gdb1976f-dirty",
		"api/v0.3.0":                         "api_v0.3.0",
		"v0.3.0+build.7":                     "v0.3.0_build.7",
		"(devel)":                            "devel",
		"v1.2.3-" + string(make([]byte, 70)): "v1.2.3",
	} {
		got := VersionLabelValue(version)
		assert.Equal(t, want, got, "version %q", version)
		assert.Empty(t, validation.IsValidLabelValue(got), "version %q", version)
	}
}
