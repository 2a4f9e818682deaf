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

package agent

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestReconnectBackoff(t *testing.T) {
	tests := []struct {
		name   string
		lasted []time.Duration // how long each session lasted
		want   []time.Duration // the wait after each
	}{
		{"sessions failing at once double the wait up to the maximum",
			[]time.Duration{0, 0, 0, 0, 0, 0, 0},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}},
		{"a session that was up for the minimum starts again from the minimum",
			[]time.Duration{0, 0, 0, 0, 0, 0, 31 * time.Second, 0},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, time.Second, 2 * time.Second}},
		{"a service restarted every few seconds is reconnected to within the minimum",
			[]time.Duration{0, 0, 0, 0, 0, 0, 7 * time.Second, 5 * time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, time.Second, time.Second}},
		{"sessions dropped within the minimum keep doubling",
			[]time.Duration{0, 500 * time.Millisecond, 999 * time.Millisecond, time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := reconnectBackoff{min: time.Second, max: 30 * time.Second}
			var got []time.Duration
			for _, lasted := range tc.lasted {
				got = append(got, b.next(lasted))
			}
			assert.Equal(t, tc.want, got)
		})
	}
}
