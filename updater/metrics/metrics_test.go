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

package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki/pkitest"
)

func TestNamesAreServed(t *testing.T) {
	pkitest.LoadCertificate(t)
	m := New() // nothing observed yet: every series is there at zero
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	body := rec.Body.String()
	for _, name := range Names() {
		assert.True(t, strings.HasPrefix(name, "dynamic_memory_"), name)
		assert.True(t, strings.Contains(body, "# TYPE "+name+" "), "metric %s is listed by Names but not served", name)
	}
	assert.Contains(t, body, `dynamic_memory_agent_commands_total{command="offline",outcome="failed"} 0`)
}
