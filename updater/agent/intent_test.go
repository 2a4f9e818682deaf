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
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	memservicev1 "github.com/dynamicmemory/kube-dynamic-memory/api/memservice/v1"
	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/cgroup"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/hostmem"
	"github.com/dynamicmemory/kube-dynamic-memory/updater/metrics"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runAgent runs an agent on host with limiter (nil: none) and the checkpoint file, and
// returns its first session, past the hello. stop ends it like a SIGTERM would.
func runAgent(t *testing.T, cpFile string, host Host, limiter Limiter) (s *fakeSession, stop func()) {
	t.Helper()
	cfg := Config{Host: host, CheckpointFile: cpFile, HeartbeatInterval: time.Hour}
	if limiter != nil {
		cfg.Limiter = limiter
	}
	return runAgentWith(t, cfg)
}

// runAgentWith runs an agent of node-1 with cfg, connected to a fake memory service,
// and returns its first session, past the hello. stop ends it like a SIGTERM would.
func runAgentWith(t *testing.T, cfg Config) (s *fakeSession, stop func()) {
	t.Helper()
	svc, client := startService(t)
	cfg.Node, cfg.Client, cfg.Metrics = "node-1", client, metrics.New()
	a, err := New(cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		require.NoError(t, <-done)
	})
	t.Cleanup(stop)
	s = svc.session(t)
	require.NotNil(t, s.next(t).GetHello())
	return s, stop
}

// cutShort onlines the first block of a request, then hangs until the agent stops:
// an agent killed while onlining.
type cutShort struct {
	*hostmem.Simulated
	hanging chan struct{}
}

func (c *cutShort) Online(ctx context.Context, req hostmem.Request, p hostmem.Progress) (hostmem.Result, error) {
	first := req
	first.Extents = []v1alpha1.Extent{{Offset: req.Extents[0].Offset, Length: c.BlockSize()}}
	if _, err := c.Simulated.Online(ctx, first, p); err != nil {
		return hostmem.Result{}, err
	}
	close(c.hanging)
	<-ctx.Done()
	return hostmem.Result{}, ctx.Err()
}

func readFile(t *testing.T, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	return data
}

// The intent, checkpointed before the first block is onlined, is what lets the agent
// finish the claim's onlining after a crash: the blocks online are the claim's.
func TestAgentResumesOnliningCutShortByACrash(t *testing.T) {
	cp := filepath.Join(t.TempDir(), "agent.json")
	sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	host := &cutShort{Simulated: sim, hanging: make(chan struct{})}
	s, stop := runAgent(t, cp, host, nil)
	s.send(t, onlineCmd("c1", "uid-1", 0, 256*mib))
	<-host.hanging
	crashed := readFile(t, cp) // the checkpoint as a kill now would leave it
	stop()
	require.NoError(t, os.WriteFile(cp, crashed, 0o644))
	saved, err := loadCheckpoint(cp)
	require.NoError(t, err)
	assert.Equal(t, map[string]pendingClaim{"uid-1": {Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 0, Length: 256 * mib}}}}, saved.Pending)
	assert.Equal(t, 1, sim.OnlineBlocks(), "one of the two blocks made it online")

	s, _ = runAgent(t, cp, sim, nil)
	s.send(t, onlineCmd("c2", "uid-1", 0, 256*mib))
	res := s.result(t)
	require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, res.Outcome, res.Message)
	assert.Equal(t, 2, sim.OnlineBlocks())
	saved, err = loadCheckpoint(cp)
	require.NoError(t, err)
	assert.Contains(t, saved.Claims, "uid-1")
	assert.Empty(t, saved.Pending, "the intent became the claim's record")
}

// Memory online for one claim is never reported online for another, nor is memory
// another claim is being given.
func TestAgentRefusesMemoryOfAnotherClaim(t *testing.T) {
	t.Run("online", func(t *testing.T) {
		cp := filepath.Join(t.TempDir(), "agent.json")
		sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
		s, _ := runAgent(t, cp, sim, nil)
		s.send(t, onlineCmd("c1", "uid-1", 0, 256*mib))
		require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, s.result(t).Outcome)

		s.send(t, onlineCmd("c2", "uid-2", 128*mib, 256*mib))
		res := s.result(t)
		require.Equal(t, memservicev1.CommandResult_OUTCOME_FAILED, res.Outcome)
		assert.Equal(t, "claim uid-2: memory block(s) [1] of pool pool-a are online: memory still online, and nothing records it as this claim's (another claim's memory or the host's own); nothing was onlined", res.Message)
		assert.Equal(t, 2, sim.OnlineBlocks(), "block 2 was not onlined either")
		held, err := CheckpointClaims(cp)
		require.NoError(t, err)
		assert.Equal(t, []string{"uid-1"}, held, "no intent is left for uid-2")
	})
	t.Run("being onlined", func(t *testing.T) {
		cp := filepath.Join(t.TempDir(), "agent.json")
		data, err := checkpoint{Pending: map[string]pendingClaim{"uid-1": {Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 0, Length: 256 * mib}}}}}.encode()
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(cp, data, 0o644))
		sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
		s, _ := runAgent(t, cp, sim, nil)
		s.send(t, onlineCmd("c1", "uid-2", 128*mib, 128*mib))
		res := s.result(t)
		require.Equal(t, memservicev1.CommandResult_OUTCOME_FAILED, res.Outcome)
		assert.Equal(t, "claim uid-2: extents [[134217728,+134217728)] of pool pool-a overlap the memory of claim uid-1 on this node; nothing was onlined", res.Message)
		assert.Equal(t, 0, sim.OnlineBlocks())
	})
}

func TestAgentOnlineOfTheSameClaim(t *testing.T) {
	sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	var onlines int
	host := &countingHost{Simulated: sim, onlines: &onlines}
	s, _ := runAgent(t, filepath.Join(t.TempDir(), "agent.json"), host, nil)
	s.send(t, onlineCmd("c1", "uid-1", 0, 256*mib))
	require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, s.result(t).Outcome)

	s.send(t, onlineCmd("c2", "uid-1", 0, 256*mib))
	res := s.result(t)
	assert.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, res.Outcome, "the same memory, all online: done already")
	assert.Equal(t, []int32{1}, res.NumaNodes)
	assert.Equal(t, 1, onlines, "the host was only checked")

	s.send(t, onlineCmd("c3", "uid-1", 256*mib, 256*mib))
	res = s.result(t)
	require.Equal(t, memservicev1.CommandResult_OUTCOME_FAILED, res.Outcome)
	assert.Equal(t, "claim uid-1 has memory online on this node in pool pool-a (extents [[0,+268435456)]); the command names pool pool-a extents [[268435456,+268435456)]: refusing to online other memory for the same claim", res.Message)
	assert.Equal(t, 2, sim.OnlineBlocks())
}

type countingHost struct {
	*hostmem.Simulated
	onlines *int
}

func (c *countingHost) Online(ctx context.Context, req hostmem.Request, p hostmem.Progress) (hostmem.Result, error) {
	*c.onlines++
	return c.Simulated.Online(ctx, req, p)
}

// An agent that cannot read its checkpoint starts empty instead of crash-looping,
// keeps the bad file, says so in a metric, and then proves everything: memory online
// is neither taken for a claim nor offlined.
func TestAgentStartsSafelyFromACorruptCheckpoint(t *testing.T) {
	dir := t.TempDir()
	cp := filepath.Join(dir, "agent.json")
	truncated := `{"claims": {"uid-1": {"pool": "pool-a", "exte`
	require.NoError(t, os.WriteFile(cp, []byte(truncated), 0o644))
	state, err := CgroupState(cp)
	require.NoError(t, err, "the node agent command reads the cgroup state first")
	assert.Equal(t, cgroup.State{}, state)

	sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	_, err = sim.Online(context.Background(), hostmem.Request{ClaimUID: "uid-1", Pool: "pool-a", Extents: []v1alpha1.Extent{{Offset: 0, Length: 256 * mib}}}, nil)
	require.NoError(t, err)
	h := startAgent(t, cp, sim)
	assert.Equal(t, float64(1), testutil.ToFloat64(h.metrics.CheckpointCorrupt))
	kept, err := filepath.Glob(cp + ".corrupt-*")
	require.NoError(t, err)
	require.Len(t, kept, 1)
	assert.Equal(t, truncated, string(readFile(t, kept[0])), "the bad file is kept for a person")

	s := h.svc.session(t)
	require.Empty(t, s.next(t).GetHello().HostState.Online)
	s.send(t, onlineCmd("c1", "uid-1", 0, 256*mib))
	res := s.result(t)
	assert.Equal(t, memservicev1.CommandResult_OUTCOME_FAILED, res.Outcome)
	assert.Contains(t, res.Message, "memory block(s) [0 1] of pool pool-a are online")
	off := offlineCmd("c2", "uid-1", 0, 256*mib)
	off.GetOffline().Pool = "pool-a"
	s.send(t, off)
	res = s.result(t)
	assert.Equal(t, memservicev1.CommandResult_OUTCOME_FAILED, res.Outcome)
	assert.Contains(t, res.Message, "this agent has no record of onlining it for claim uid-1")
	assert.Equal(t, 2, sim.OnlineBlocks(), "the memory stays as it was")
}

// An older agent recorded only the pool of claims it was asked to online; such a
// record is an intent without extents: an offline goes to its pool, with the
// command's extents.
func TestAgentReadsAnOlderAgentsPools(t *testing.T) {
	cp := filepath.Join(t.TempDir(), "agent.json")
	require.NoError(t, os.WriteFile(cp, []byte(`{
  "claims": {"uid-1": {"pool": "pool-a", "extents": [{"offset": 0, "length": 134217728}], "bytes": 134217728}},
  "pools": {"uid-1": "pool-a", "uid-2": "pool-b"},
  "cgroup": {"base": 0, "written": 0}
}`), 0o644))
	saved, err := loadCheckpoint(cp)
	require.NoError(t, err)
	assert.Equal(t, map[string]pendingClaim{"uid-2": {Pool: "pool-b"}}, saved.Pending, "a claim online is not also an intent")

	sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	_, err = sim.Online(context.Background(), hostmem.Request{ClaimUID: "uid-2", Pool: "pool-b", Extents: []v1alpha1.Extent{{Offset: 0, Length: 128 * mib}}}, nil)
	require.NoError(t, err)
	host := &halfOnline{Simulated: sim}
	s, stop := runAgent(t, cp, host, nil)
	s.send(t, offlineCmd("c1", "uid-2", 0, 128*mib))
	res := s.result(t)
	require.Equal(t, memservicev1.CommandResult_OUTCOME_OFFLINE, res.Outcome, res.Message)
	assert.Equal(t, []string{"pool-b"}, host.offlines)
	assert.Equal(t, 0, sim.OnlineBlocks())
	stop()
	assert.NotContains(t, string(readFile(t, cp)), `"pools"`, "the old field is not written again")
	held, err := CheckpointClaims(cp)
	require.NoError(t, err)
	assert.Equal(t, []string{"uid-1"}, held, "uid-2 is gone; uid-1, whose memory was not online at the start, is an intent until its offline")
}

// Without its intent on disk the agent touches no memory.
func TestAgentOnlinesNothingItCouldNotRecord(t *testing.T) {
	cp := filepath.Join(t.TempDir(), "missing", "agent.json")
	sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
	s, _ := runAgent(t, cp, sim, nil)
	s.send(t, onlineCmd("c1", "uid-1", 0, 128*mib))
	res := s.result(t)
	require.Equal(t, memservicev1.CommandResult_OUTCOME_FAILED, res.Outcome)
	assert.Contains(t, res.Message, "claim uid-1: record the intent to online its memory: write agent checkpoint:")
	assert.Equal(t, 0, sim.OnlineBlocks())
}

// crashLimiter takes the checkpoint as a kill would leave it, just before or just
// after the first limit write that raises the limit.
type crashLimiter struct {
	*cgroup.Limiter
	cp          string
	afterWrite  bool
	crashed     []byte
	crashedOnce sync.Once
}

func (c *crashLimiter) Set(online int64, persist func(cgroup.State) error) (int64, error) {
	limit, err := c.Limiter.Set(online, func(st cgroup.State) error {
		var err error
		if persist != nil {
			err = persist(st)
		}
		if online > 0 && !c.afterWrite {
			c.crashedOnce.Do(func() { c.crashed, _ = os.ReadFile(c.cp) })
		}
		return err
	})
	if online > 0 && c.afterWrite {
		c.crashedOnce.Do(func() { c.crashed, _ = os.ReadFile(c.cp) })
	}
	return limit, err
}

// A kill on either side of the pod cgroup limit write never makes the restarted agent
// raise the limit twice.
func TestAgentNeverRaisesTheCgroupLimitTwiceAfterACrash(t *testing.T) {
	for _, afterWrite := range []bool{false, true} {
		name := "killed before the limit write"
		if afterWrite {
			name = "killed after the limit write"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			limitFile := filepath.Join(dir, "kubepods", "memory.max")
			require.NoError(t, os.MkdirAll(filepath.Dir(limitFile), 0o755))
			require.NoError(t, os.WriteFile(limitFile, []byte("17179869184\n"), 0o644)) // the kubelet's 16Gi
			cp := filepath.Join(dir, "agent.json")
			sim := hostmem.NewSimulated(hostmem.SimulatedConfig{})
			limiter, err := cgroup.New(dir, "", cgroup.State{})
			require.NoError(t, err)
			crash := &crashLimiter{Limiter: limiter, cp: cp, afterWrite: afterWrite}
			s, stop := runAgent(t, cp, sim, crash)
			s.send(t, onlineCmd("c1", "uid-1", 0, 1024*mib))
			require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, s.result(t).Outcome)
			stop()
			require.NotNil(t, crash.crashed)
			require.NoError(t, os.WriteFile(cp, crash.crashed, 0o644))
			if !afterWrite {
				require.NoError(t, os.WriteFile(limitFile, []byte("17179869184\n"), 0o644))
			}

			// The restarted agent, as the node agent command builds it.
			state, err := CgroupState(cp)
			require.NoError(t, err)
			limiter, err = cgroup.New(dir, "", state)
			require.NoError(t, err)
			s, _ = runAgent(t, cp, sim, limiter)
			s.send(t, onlineCmd("c2", "uid-1", 0, 1024*mib)) // the service sends it again
			res := s.result(t)
			require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, res.Outcome, res.Message)
			assert.Equal(t, "18253611008", strings.TrimSpace(string(readFile(t, limitFile))), "16Gi from the kubelet + 1Gi online")
		})
	}
}

// The kubelet writes the kubepods limit from its node allocatable when it starts, so
// a kubelet restart takes back the raise while pods use the pool memory. The agent
// finds the kubelet's value and raises the limit again on its own, without waiting
// for a heartbeat of a session that may be down.
func TestAgentRaisesTheCgroupLimitAgainAfterTheKubeletRewritesIt(t *testing.T) {
	dir := t.TempDir()
	limitFile := filepath.Join(dir, "kubepods", "memory.max")
	require.NoError(t, os.MkdirAll(filepath.Dir(limitFile), 0o755))
	const kubelet, raised = "17179869184", "18253611008" // 16Gi; 16Gi + 1Gi online
	require.NoError(t, os.WriteFile(limitFile, []byte(kubelet+"\n"), 0o644))
	limiter, err := cgroup.New(dir, "", cgroup.State{})
	require.NoError(t, err)

	s, _ := runAgentWith(t, Config{
		Host: hostmem.NewSimulated(hostmem.SimulatedConfig{}), Limiter: limiter, CheckpointFile: filepath.Join(dir, "agent.json"),
		// No heartbeat comes to the rescue within the test.
		HeartbeatInterval: time.Hour, CgroupCheckInterval: 20 * time.Millisecond,
	})
	s.send(t, onlineCmd("c1", "uid-1", 0, 1024*mib))
	require.Equal(t, memservicev1.CommandResult_OUTCOME_ONLINE, s.result(t).Outcome)
	require.Equal(t, raised, strings.TrimSpace(string(readFile(t, limitFile))))

	for restart := range 2 {
		require.NoError(t, os.WriteFile(limitFile, []byte(kubelet+"\n"), 0o644), "the kubelet starts again")
		assert.Eventually(t, func() bool { return strings.TrimSpace(string(readFile(t, limitFile))) == raised }, 5*time.Second, 10*time.Millisecond,
			"kubelet restart %d: the limit is raised again by the bytes online", restart)
	}
	assert.Equal(t, cgroup.State{Base: 17179869184, Written: 18253611008, Previous: 17179869184}, limiter.State(), "the kubelet's value is the base, never the agent's own")
}
