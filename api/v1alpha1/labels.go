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
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// labelPrefixLength is how much of a long name a label value keeps before its hash.
const labelPrefixLength = 40

// LabelValue is a name (a node's or a pool's, up to the 253 characters the API allows)
// as a label value (at most 63): the name itself when it is a valid label value,
// otherwise its first characters and a hash of the whole name, stable and distinct per
// name. The object's spec keeps the full name.
func LabelValue(name string) string {
	if len(validation.IsValidLabelValue(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	hash := hex.EncodeToString(sum[:8])
	prefix := strings.Map(func(r rune) rune {
		if r < 0x80 && (r == '-' || r == '_' || r == '.' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return r
		}
		return '-'
	}, name)
	prefix = prefix[:min(len(prefix), labelPrefixLength)]
	prefix = strings.Trim(prefix, "-_.")
	if prefix == "" {
		return hash
	}
	return prefix + "-" + hash
}
