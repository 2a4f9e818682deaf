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

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/dynamicmemory/kube-dynamic-memory/local/system"
)

// The clients of the API server, as the benchmark tells them apart (by user agent
// and user, from the API server's audit log).
const (
	clientKubernetes = "kubernetes" // kube-scheduler, kube-controller-manager, kwok (the kubelets)
	clientProject    = "project"    // the memory service, the node agents, the DRA plugins
	clientBenchmark  = "benchmark"  // this benchmark: pods made and deleted, state polled
)

// auditEvent is the part of an audit.k8s.io/v1 Event the benchmark reads.
type auditEvent struct {
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	User      struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	RequestReceived time.Time `json:"requestReceivedTimestamp"`
}

// clientOf tells who made a request.
func clientOf(e auditEvent) (group, component string) {
	ua, _, _ := strings.Cut(e.UserAgent, "/")
	switch {
	case ua == "memservice" || ua == "dynamic-memory-node-agent" || ua == "dynamic-memory-dra-plugin":
		return clientProject, ua
	case ua == "kube-scheduler" || ua == "kube-controller-manager" || ua == "kwok":
		return clientKubernetes, ua
	}
	return clientBenchmark, ua
}

// requestKey is one kind of request: by whom, on what, which verb.
type requestKey struct {
	group, component, resource, verb string
}

// requestCounts are the requests of a window of time, by kind.
type requestCounts map[requestKey]int

func (c requestCounts) total(group string, keep func(requestKey) bool) int {
	n := 0
	for k, v := range c {
		if k.group == group && (keep == nil || keep(k)) {
			n += v
		}
	}
	return n
}

// isWrite tells whether a verb changes state.
func isWrite(verb string) bool {
	return verb == "create" || verb == "update" || verb == "patch" || verb == "delete" || verb == "deletecollection"
}

// auditWindow reads the API server's audit log between two points of a run, and its
// count of watch events sent.
type auditWindow struct {
	sys    *system.System
	offset int64
	// watchEvents are apiserver_watch_events_total by resource at the start.
	watchEvents map[string]float64
}

// startAuditWindow remembers where the audit log ends now, and the watch events
// sent so far.
func startAuditWindow(ctx context.Context, b *testing.B, sys *system.System) *auditWindow {
	st, err := os.Stat(sys.Cluster.AuditLogPath())
	if err != nil {
		b.Fatalf("the API server's audit log: %v", err)
	}
	return &auditWindow{sys: sys, offset: st.Size(), watchEvents: watchEvents(ctx, b, sys)}
}

// watchEvents reads kube-apiserver's apiserver_watch_events_total, summed by resource: the
// events it sent to every watcher (Kubernetes' components and this project's alike;
// the API server does not count them by watcher).
func watchEvents(ctx context.Context, b *testing.B, sys *system.System) map[string]float64 {
	raw, err := sys.Cluster.Client().CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		b.Fatalf("kube-apiserver metrics: %v", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		b.Fatalf("parse kube-apiserver metrics: %v", err)
	}
	out := map[string]float64{}
	if f, ok := families["apiserver_watch_events_total"]; ok {
		for _, m := range f.GetMetric() {
			resource := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "resource" {
					resource = l.GetValue()
				}
			}
			out[resource] += m.GetCounter().GetValue()
		}
	}
	return out
}

// counts returns the requests logged since the window started, waiting until the
// log holds every request made before the call (the log is written in batches): a
// marker request is made and waited for. Long-running watches are not counted; the
// watch events sent meanwhile are returned by resource.
func (w *auditWindow) counts(ctx context.Context, b *testing.B) (requestCounts, map[string]float64) {
	marker := fmt.Sprintf("audit-marker-%d", time.Now().UnixNano())
	_, err := w.sys.Cluster.Client().CoreV1().ConfigMaps(metav1.NamespaceDefault).Get(ctx, marker, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		b.Fatalf("marker request: %v", err)
	}
	var counts requestCounts
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		var seen bool
		counts, seen, err = w.read(marker)
		return seen, err
	})
	if err != nil {
		b.Fatalf("read the audit log up to the marker %s: %v", marker, err)
	}
	events := watchEvents(ctx, b, w.sys)
	for resource, n := range w.watchEvents {
		events[resource] -= n
	}
	return counts, events
}

func (w *auditWindow) read(marker string) (requestCounts, bool, error) {
	f, err := os.Open(w.sys.Cluster.AuditLogPath())
	if err != nil {
		return nil, false, err
	}
	defer func() { _ = f.Close() }()
	if _, err := f.Seek(w.offset, io.SeekStart); err != nil {
		return nil, false, err
	}
	counts := requestCounts{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e auditEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, false, fmt.Errorf("audit log line: %w", err)
		}
		if e.ObjectRef == nil || e.Verb == "watch" {
			continue
		}
		if e.ObjectRef.Resource == "configmaps" && e.ObjectRef.Name == marker {
			return counts, true, nil
		}
		group, component := clientOf(e)
		resource := e.ObjectRef.Resource
		if e.ObjectRef.Subresource != "" {
			resource += "/" + e.ObjectRef.Subresource
		}
		counts[requestKey{group, component, resource, e.Verb}]++
	}
	return counts, false, sc.Err()
}

// apiCost is what a run cost the API server per pod.
type apiCost struct {
	// kubernetes and project are the requests per pod of Kubernetes' components and
	// of this project's; sliceWrites the ResourceSlice writes per pod; watchEvents the
	// watch events the API server sent per pod, to all watchers.
	kubernetes, project, sliceWrites, watchEvents float64
	table                                         string
}

// costOf divides a run's requests and watch events by its pods, and tabulates them by
// component, resource and verb, and by resource.
func costOf(counts requestCounts, events map[string]float64, pods int) apiCost {
	per := func(n int) float64 { return float64(n) / float64(pods) }
	c := apiCost{
		kubernetes: per(counts.total(clientKubernetes, nil)),
		project:    per(counts.total(clientProject, nil)),
		sliceWrites: per(counts.total(clientProject, func(k requestKey) bool {
			return strings.HasPrefix(k.resource, "resourceslices") && isWrite(k.verb)
		}) + counts.total(clientKubernetes, func(k requestKey) bool {
			return strings.HasPrefix(k.resource, "resourceslices") && isWrite(k.verb)
		})),
	}
	keys := slices.SortedFunc(maps.Keys(counts), func(a, b requestKey) int {
		return strings.Compare(a.group+a.component+a.resource+a.verb, b.group+b.component+b.resource+b.verb)
	})
	var sb strings.Builder
	fmt.Fprintf(&sb, "%-10s %-27s %-40s %-8s %s\n", "client", "component", "resource", "verb", "per pod")
	for _, k := range keys {
		fmt.Fprintf(&sb, "%-10s %-27s %-40s %-8s %.2f\n", k.group, k.component, k.resource, k.verb, per(counts[k]))
	}
	fmt.Fprintf(&sb, "\nwatch events sent (to all watchers), per pod, by resource:\n")
	for _, resource := range slices.Sorted(maps.Keys(events)) {
		if events[resource] > 0 {
			c.watchEvents += events[resource] / float64(pods)
			fmt.Fprintf(&sb, "%-40s %.2f\n", resource, events[resource]/float64(pods))
		}
	}
	c.table = sb.String()
	return c
}
