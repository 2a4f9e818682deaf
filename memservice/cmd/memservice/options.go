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

package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/component-base/term"
	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/command"
	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/ledger"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/provision"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/reconciler"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/service"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/signer"
)

const userAgent = "memservice"

// newCommand is the memservice command: it serves; its subcommand certs writes a
// development certificate bundle.
func newCommand() *cobra.Command {
	cmd := command.New("memservice", "Serve the capacity of CXL dynamic capacity memory pools",
		`memservice is the memory service: the single source of truth for the capacity of
the DynamicMemoryPools. It reserves and provisions memory for ResourceClaims of the
dynamic memory DRA driver over mutual-TLS gRPC, records every reservation as a
DynamicMemoryClaim, and releases memory no pod needs any more. One instance serves
at a time (leader election on a Lease).

"memservice certs" writes a development certificate bundle (see memservice certs --help).`, newOptions())
	cmd.AddCommand(newCertsCommand())
	return cmd
}

// options are the flags of memservice (serve).
type options struct {
	cfg    service.Config
	kube   command.KubeClient
	tlsDir string

	signerCADir           string
	signerServiceAccounts []string
}

func newOptions() *options {
	o := &options{kube: command.KubeClient{QPS: 200, Burst: 400}}
	o.cfg.ListenAddress = ":8443"
	o.cfg.Metrics.Address = ":8080"
	o.cfg.ReservationTTL = ledger.DefaultReservationTTL
	o.cfg.ProvisionGracePeriod = reconciler.DefaultProvisionGracePeriod
	o.cfg.AgentCommandTimeout = provision.DefaultAgentCommandTimeout
	o.cfg.PoolStatusInterval = service.DefaultPoolStatusInterval
	o.cfg.LeaderElection.Enabled = true
	o.cfg.LeaderElection.Namespace = deploy.Namespace
	o.cfg.LeaderElection.Name = deploy.MemoryServiceName
	o.cfg.Signer.Name = deploy.SignerName
	o.cfg.Signer.Lifetime = signer.DefaultLifetime
	o.cfg.Signer.ServingNames = serverNames
	o.signerServiceAccounts = []string{
		string(pki.RoleScheduler) + "=" + deploy.Namespace + "/" + deploy.SchedulerServiceAccount,
		string(pki.RoleAgent) + "=" + deploy.NodeNamespace + "/" + deploy.NodeAgentServiceAccount,
		string(pki.RoleDRAPlugin) + "=" + deploy.NodeNamespace + "/" + deploy.DRAPluginServiceAccount,
	}
	return o
}

// serverNames are the names the memory service is reached by: the Service's, and
// the loopback ones for a port-forward.
var serverNames = []string{
	deploy.MemoryServiceName, deploy.MemoryServiceName + "." + deploy.Namespace + ".svc", "localhost", "127.0.0.1",
}

func (o *options) AddFlags(fss *cliflag.NamedFlagSets) {
	fs := fss.FlagSet("serving")
	fs.StringVar(&o.cfg.ListenAddress, "listen", o.cfg.ListenAddress, "gRPC listen address.")
	o.cfg.Metrics.AddFlags(fs, "metrics")

	fs = fss.FlagSet("TLS")
	fs.StringVar(&o.tlsDir, "tls-dir", o.tlsDir, "directory of a bundle written by \"memservice certs\" (sets --tls-ca, --tls-cert, --tls-key).")
	fs.StringVar(&o.cfg.TLS.CAFile, "tls-ca", o.cfg.TLS.CAFile, "CA bundle that signs client certificates.")
	fs.StringVar(&o.cfg.TLS.CertFile, "tls-cert", o.cfg.TLS.CertFile, "server certificate.")
	fs.StringVar(&o.cfg.TLS.KeyFile, "tls-key", o.cfg.TLS.KeyFile, "server key.")

	fs = fss.FlagSet("certificate signer")
	fs.StringVar(&o.signerCADir, "signer-ca-dir", o.signerCADir, "directory holding the CA of the memory service's clients as ca.crt and ca.key (\"memservice certs --dir\" writes them; mount them from a Secret). The service then signs the PodCertificateRequests of its clients' pods, publishes the CA as a ClusterTrustBundle and serves with a certificate it issues itself, instead of --tls-*. A ca.crt holding the previous CA after the new one keeps certificates of both trusted during a rotation.")
	fs.StringVar(&o.cfg.Signer.Name, "signer-name", o.cfg.Signer.Name, "signer name of the PodCertificateRequests this service signs.")
	fs.StringSliceVar(&o.signerServiceAccounts, "signer-service-accounts", o.signerServiceAccounts, "role=namespace/serviceaccount pairs: the pods of each ServiceAccount get a certificate of the role (scheduler, agent or draplugin; agent and draplugin certificates name the pod's node). Requests of other ServiceAccounts are denied.")
	fs.DurationVar(&o.cfg.Signer.Lifetime, "signer-certificate-lifetime", o.cfg.Signer.Lifetime, "lifetime of the certificates signed (at least 1h; the kubelet renews them from half of it on), and of the serving certificate.")
	fs.StringSliceVar(&o.cfg.Signer.ServingNames, "serving-names", o.cfg.Signer.ServingNames, "DNS names and IPs of the serving certificate the service issues itself with --signer-ca-dir.")

	fs = fss.FlagSet("memory")
	fs.DurationVar(&o.cfg.ReservationTTL, "reservation-ttl", o.cfg.ReservationTTL, "how long a Reserved entry lives unless provisioned.")
	fs.DurationVar(&o.cfg.ProvisionGracePeriod, "provision-grace-period", o.cfg.ProvisionGracePeriod, "provisioned memory whose claim got no pod within this is released.")
	fs.DurationVar(&o.cfg.AgentCommandTimeout, "agent-command-timeout", o.cfg.AgentCommandTimeout, "how long to wait for a node agent to online memory.")
	fs.DurationVar(&o.cfg.PoolStatusInterval, "pool-status-interval", o.cfg.PoolStatusInterval,
		fmt.Sprintf("least time between two status writes of the DynamicMemoryPools (at least %s): a change is written this long after it, with every change made meanwhile.", service.MinPoolStatusInterval))

	fs = fss.FlagSet("leader election")
	fs.BoolVar(&o.cfg.LeaderElection.Enabled, "leader-elect", o.cfg.LeaderElection.Enabled, "elect a leader on a Lease; only the leader serves.")
	fs.StringVar(&o.cfg.LeaderElection.Namespace, "leader-elect-namespace", o.cfg.LeaderElection.Namespace, "namespace of the Lease.")
	fs.StringVar(&o.cfg.LeaderElection.Name, "leader-elect-name", o.cfg.LeaderElection.Name, "name of the Lease.")
	fs.StringVar(&o.cfg.LeaderElection.Identity, "leader-elect-identity", o.cfg.LeaderElection.Identity, "this instance's identity in the Lease (default: the host name and a random suffix, unique per process).")

	o.kube.AddFlags(fss.FlagSet("kubernetes"), "a claim costs two writes to provision, its DynamicMemoryClaim written before the hardware acts, and three to release")
}

// complete checks the flags and fills in what they leave to defaults.
func (o *options) complete() error {
	if o.cfg.PoolStatusInterval < service.MinPoolStatusInterval {
		return fmt.Errorf("--pool-status-interval must be at least %s, got %s", service.MinPoolStatusInterval, o.cfg.PoolStatusInterval)
	}
	if o.signerCADir != "" {
		b := pki.Bundle{Dir: o.signerCADir}
		o.cfg.Signer.CAFile, o.cfg.Signer.CAKeyFile = b.CAFile(), b.KeyFile("ca")
		accounts, err := parseServiceAccounts(o.signerServiceAccounts)
		if err != nil {
			return err
		}
		o.cfg.Signer.ServiceAccounts = accounts
	}
	if o.tlsDir != "" {
		b := pki.Bundle{Dir: o.tlsDir}
		setDefault(&o.cfg.TLS.CAFile, b.CAFile())
		setDefault(&o.cfg.TLS.CertFile, b.CertFile("server"))
		setDefault(&o.cfg.TLS.KeyFile, b.KeyFile("server"))
	}
	if o.cfg.LeaderElection.Enabled && o.cfg.LeaderElection.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--leader-elect-identity: hostname: %w", err)
		}
		// Unique per process, as kube-scheduler's: an instance started after a crash
		// waits until the crashed one's Lease expires, so that a record write the
		// crashed one had in flight lands before the new one rebuilds from the
		// records (the chaos suite found such a write landing after the rebuild when
		// the identity was the host name alone), and the fence tells them apart.
		o.cfg.LeaderElection.Identity = host + "_" + string(uuid.NewUUID())
	}
	restConfig, err := o.kube.RESTConfig(userAgent)
	if err != nil {
		return err
	}
	o.cfg.RESTConfig = restConfig
	return nil
}

func (o *options) Run(ctx context.Context) error {
	if err := o.complete(); err != nil {
		return err
	}
	svc, err := service.New(o.cfg)
	if err != nil {
		return err
	}
	klog.FromContext(ctx).Info("Memory service starting", "grpc", svc.Addr(), "metrics", svc.MetricsAddr(),
		"leaderElection", o.cfg.LeaderElection.Enabled)
	return svc.Run(ctx)
}

func setDefault(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// newCertsCommand is "memservice certs": it writes a development certificate bundle.
func newCertsCommand() *cobra.Command {
	var (
		dir         = "certs"
		serverNames = strings.Join(serverNames, ",")
		nodes       string
	)
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Write a development certificate bundle",
		Long: `certs writes a CA, the memory service's server certificate, and a client
certificate for each role and node (scheduler, admin, and an agent and a draplugin
certificate per node) into a directory. An existing CA there is reused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := pki.WriteBundle(dir, splitList(serverNames), splitList(nodes))
			if err != nil {
				return fmt.Errorf("write certificate bundle: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote CA %s, server %s and client certificates in %s\n", b.CAFile(), b.CertFile("server"), b.Dir)
			return nil
		},
	}
	var fss cliflag.NamedFlagSets
	fs := fss.FlagSet("certs")
	fs.StringVar(&dir, "dir", dir, "directory to write ca.crt, server.crt and the client certificates into (an existing CA there is reused).")
	fs.StringVar(&serverNames, "server-names", serverNames, "comma-separated DNS names and IPs of the server certificate.")
	fs.StringVar(&nodes, "nodes", nodes, "comma-separated node names: an agent and a draplugin certificate is written for each.")
	for _, f := range fss.FlagSets {
		cmd.Flags().AddFlagSet(f)
	}
	cols, _, _ := term.TerminalSize(cmd.OutOrStdout())
	cliflag.SetUsageAndHelpFunc(cmd, fss, cols)
	return cmd
}

// parseServiceAccounts reads --signer-service-accounts.
func parseServiceAccounts(pairs []string) (map[types.NamespacedName]pki.Role, error) {
	out := map[types.NamespacedName]pki.Role{}
	for _, p := range pairs {
		role, sa, ok := strings.Cut(p, "=")
		ns, name, ok2 := strings.Cut(sa, "/")
		if !ok || !ok2 || ns == "" || name == "" {
			return nil, fmt.Errorf("--signer-service-accounts: %q is not role=namespace/serviceaccount", p)
		}
		out[types.NamespacedName{Namespace: ns, Name: name}] = pki.Role(role)
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
