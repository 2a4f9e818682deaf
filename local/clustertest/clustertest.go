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

// Package clustertest starts a local cluster for a test and stops it when the test
// ends.
package clustertest

import (
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/dynamicmemory/kube-dynamic-memory/local/cluster"
)

// logLines is how much of each component's log a failed test prints.
const logLines = 40

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// Start starts a local cluster for t and stops it in t.Cleanup. Unless o.Dir is set,
// the run directory is a new temporary directory, removed when the test passes and
// kept (its path logged) when it fails. When the test has failed, the tail of every
// component's log is printed too; CLUSTERTEST_LOGS=1 prints them always. Detach is
// ignored: a test's cluster never outlives the test.
func Start(t testing.TB, o cluster.Options) *cluster.Cluster {
	t.Helper()
	removeDir := false
	if o.Dir == "" {
		dir, err := os.MkdirTemp("", "local-cluster-"+unsafeChars.ReplaceAllString(t.Name(), "_")+"-")
		if err != nil {
			t.Fatalf("create run directory: %v", err)
		}
		o.Dir, removeDir = dir, true
	}
	o.Detach = false
	ctx, cancel := context.WithTimeout(klog.NewContext(context.Background(), ktesting.NewLogger(t, ktesting.NewConfig())), 5*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := cluster.Start(ctx, o)
	if err != nil {
		if removeDir {
			t.Logf("run directory kept: %s", o.Dir)
		}
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
		switch {
		case !removeDir:
		case t.Failed():
			t.Logf("run directory kept for inspection: %s", c.Dir())
		default:
			if err := os.RemoveAll(c.Dir()); err != nil {
				t.Errorf("remove run directory: %v", err)
			}
		}
	})
	return c
}
