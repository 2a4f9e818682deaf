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

package kubectlplugin

import (
	"fmt"
	"io"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
)

var binaryUnits = []struct {
	suffix string
	size   int64
}{
	{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10},
}

// formatBytes prints a byte count the way people read memory: exact binary units when
// the value is a whole number of them ("16Gi"), else one decimal ("15.6Gi").
func formatBytes(n int64) string {
	if n == 0 {
		return "0"
	}
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	for _, u := range binaryUnits {
		if n >= u.size {
			if n%u.size == 0 {
				return fmt.Sprintf("%s%d%s", sign, n/u.size, u.suffix)
			}
			return fmt.Sprintf("%s%.1f%s", sign, float64(n)/float64(u.size), u.suffix)
		}
	}
	return fmt.Sprintf("%s%d", sign, n)
}

// formatQuantity prints a quantity as bytes, "-" when unset.
func formatQuantity(q *resource.Quantity) string {
	if q == nil {
		return "-"
	}
	return formatBytes(q.Value())
}

// age prints how long ago t was, kubectl style ("5m"), "<unknown>" for a zero time.
func age(now time.Time, t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// formatDuration prints a provisioning duration with millisecond precision, "-" when unset.
func formatDuration(d *metav1.Duration) string {
	if d == nil {
		return "-"
	}
	return d.Duration.Round(time.Millisecond).String()
}

// orDash returns s, or "-" when s is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// eventTime is the last time an event was seen, whichever API recorded it.
func eventTime(ev corev1.Event) time.Time {
	switch {
	case ev.Series != nil && !ev.Series.LastObservedTime.IsZero():
		return ev.Series.LastObservedTime.Time
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.Time
	case !ev.EventTime.IsZero():
		return ev.EventTime.Time
	}
	return ev.CreationTimestamp.Time
}

// eventCount is how many times an event happened.
func eventCount(ev corev1.Event) int32 {
	switch {
	case ev.Series != nil:
		return ev.Series.Count
	case ev.Count > 0:
		return ev.Count
	}
	return 1
}

// newTable returns a tab writer with kubectl's column layout.
func newTable(w io.Writer) *tableWriter {
	return &tableWriter{tw: printers.GetNewTabWriter(w)}
}

// tableWriter writes tab-separated rows and remembers the first write error.
type tableWriter struct {
	tw interface {
		io.Writer
		Flush() error
	}
	err error
}

func (t *tableWriter) row(cells ...string) {
	if t.err != nil {
		return
	}
	_, t.err = fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *tableWriter) flush() error {
	if t.err != nil {
		return t.err
	}
	return t.tw.Flush()
}
