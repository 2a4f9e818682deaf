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

package v1alpha1

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestLabelValueFitsEveryNameTheAPIAccepts(t *testing.T) {
	fqdn := strings.Repeat("rack-12.", 24) + "example.com" // 203 characters, a valid node name
	require := assert.New(t)
	require.Empty(validation.IsDNS1123Subdomain(fqdn))
	tests := []struct {
		name, in string
		same     bool
	}{
		{"a short node name stays as it is", "node-1", true},
		{"63 characters stay", strings.Repeat("a", 63), true},
		{"64 characters are shortened", strings.Repeat("a", 64), false},
		{"a 203-character FQDN is shortened", fqdn, false},
		{"a name ending in a dot after the cut keeps a valid end", strings.Repeat("a", 39) + "." + strings.Repeat("b", 30), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := LabelValue(tc.in)
			assert.Empty(t, validation.IsValidLabelValue(got), "label value %q", got)
			assert.Equal(t, tc.same, got == tc.in, "%q", got)
			assert.Equal(t, got, LabelValue(tc.in), "stable")
		})
	}
	other := strings.Repeat("rack-12.", 24) + "example.org"
	assert.NotEqual(t, LabelValue(fqdn), LabelValue(other), "names that share their beginning get different values")
	assert.True(t, strings.HasPrefix(LabelValue(fqdn), "rack-12.rack-12."), "readable: %s", LabelValue(fqdn))
}
