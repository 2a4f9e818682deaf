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

package driver

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// TestCDISpecsAreValidForEveryClaimUID writes the spec of claims whose UIDs start
// with a letter and with a digit, and checks each against the CDI version rules the
// runtimes apply: a device name starting with a digit needs CDI 0.5.0, and a spec
// that claims an older version is refused by containerd ("the spec version must be
// at least v0.5.0"), so the container never starts.
func TestCDISpecsAreValidForEveryClaimUID(t *testing.T) {
	c := CDI{Dir: t.TempDir()}
	for _, uid := range []string{"f705664d-231d-48c1-83d7-dc795c0c9781", "616232ad-daea-4c92-913e-35f7cb0d99d0"} {
		t.Run(uid, func(t *testing.T) {
			require.NoError(t, c.Write(uid, 2<<30, []int32{1}))
			data, err := os.ReadFile(c.file(uid))
			require.NoError(t, err)
			var spec cdispec.Spec
			require.NoError(t, json.Unmarshal(data, &spec))
			assert.NoError(t, cdispec.ValidateVersion(&spec))
			assert.Equal(t, uid, spec.Devices[0].Name)
		})
	}
}
