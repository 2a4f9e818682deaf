// Package clustertest starts a local cluster for a test and stops it when the test
// ends.
package clustertest

import (
	"context"
	"os"
	"testing"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
)

// logLines is how much of each component's log a failed test prints.
const logLines = 40

// Start starts a local cluster for t in a temporary directory (unless o.Dir is set)
// and stops it in t.Cleanup. When the test has failed by then, the tail of every
// component's log is printed. Detach is ignored: a test's cluster never outlives it.
func Start(t testing.TB, o cluster.Options) *cluster.Cluster {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	o.Detach = false
	ctx, cancel := context.WithTimeout(klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig())), 5*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := cluster.Start(ctx, o)
	if err != nil {
		t.Fatalf("start local cluster: %v", err)
	}
	t.Logf("local cluster ready in %s: %s (run directory %s)", time.Since(start).Round(time.Millisecond), c.Server(), c.Dir())
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CLUSTERTEST_LOGS") != "" {
			for _, p := range c.Processes() {
				t.Logf("---- last %d lines of %s ----\n%s", logLines, p.LogFile, p.LogTail(logLines))
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop local cluster: %v", err)
		}
	})
	return c
}
