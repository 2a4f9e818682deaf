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

package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// WaitReady polls ready until it succeeds, for at most timeout, failing early (with
// the tail of the log) when the process exits. Each check gets 5 seconds.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration, ready func(context.Context) error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if !p.Running() {
			return false, fmt.Errorf("%s exited during start (%s); see %s:\n%s", p.Name, p.exitDescription(), p.LogFile, p.LogTail(30))
		}
		checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		last = ready(checkCtx)
		return last == nil, nil
	})
	if err != nil && p.Running() {
		return fmt.Errorf("%s not ready after %s (last check: %v); see %s:\n%s", p.Name, timeout, last, p.LogFile, p.LogTail(30))
	}
	return err
}

// loopbackClient reads health endpoints on 127.0.0.1. It does not verify the serving
// certificate: kube-scheduler, for one, serves with a self-signed certificate.
var loopbackClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback health check

// HTTPReady is a readiness check for WaitReady: GET url answers 200 OK.
func HTTPReady(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := loopbackClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// FreePorts returns n distinct ports on 127.0.0.1 that are free now. Each is held
// open until every one is chosen, so that the same port is not handed out twice.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// clusterPorts chooses the ports of a cluster: the apiserver's (apiPort, or a free one
// when it is 0), etcd's client and peer ports and the controller manager's.
func clusterPorts(apiPort int) (api, etcdClient, etcdPeer, kcm int, err error) {
	if apiPort != 0 {
		// Held open while the others are chosen, so that none of them is apiPort.
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort)))
		if err != nil {
			return 0, 0, 0, 0, fmt.Errorf("apiserver port %d on 127.0.0.1 is taken (%v): stop what uses it or choose another port (--port, or 0 for any free port)", apiPort, err)
		}
		defer l.Close()
	}
	ports, err := FreePorts(4)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	if apiPort == 0 {
		apiPort = ports[3]
	}
	return apiPort, ports[0], ports[1], ports[2], nil
}
