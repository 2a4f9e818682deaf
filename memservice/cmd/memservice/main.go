// Command memservice runs the dynamic memory service: the source of truth for the
// capacity of CXL Dynamic Capacity Device pools, reachable over mutual-TLS gRPC.
//
//	memservice --kubeconfig ~/.kube/config --tls-dir certs/   serve
//	memservice certs --dir certs/ --server-names memservice,127.0.0.1 --nodes node1,node2
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
	"github.com/dynamicmemory/kube-dynamic-memory/api/version"
	"github.com/dynamicmemory/kube-dynamic-memory/memservice/service"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "memservice:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	if len(args) > 0 && args[0] == "certs" {
		return certs(args[1:], out)
	}
	return serve(args)
}

// certs writes a development certificate bundle.
func certs(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("memservice certs", flag.ContinueOnError)
	dir := fs.String("dir", "certs", "directory to write ca.crt, server.crt and the client certificates into (an existing CA there is reused)")
	serverNames := fs.String("server-names", "memservice,memservice.dynamic-memory.svc,localhost,127.0.0.1", "comma-separated DNS names and IPs of the server certificate")
	nodes := fs.String("nodes", "", "comma-separated node names: an agent and a draplugin certificate is written for each")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := pki.WriteBundle(*dir, splitList(*serverNames), splitList(*nodes))
	if err != nil {
		return fmt.Errorf("write certificate bundle: %w", err)
	}
	fmt.Fprintf(out, "wrote CA %s, server %s and client certificates in %s\n", b.CAFile(), b.CertFile("server"), b.Dir)
	return nil
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

func serve(args []string) error {
	fs := flag.NewFlagSet("memservice", flag.ContinueOnError)
	klog.InitFlags(fs)
	var cfg service.Config
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (empty: in-cluster config)")
	fs.StringVar(&cfg.ListenAddress, "listen", ":8443", "gRPC listen address")
	fs.StringVar(&cfg.MetricsAddress, "metrics", ":8080", "HTTP address of /metrics, /healthz and /readyz (empty: off)")
	tlsDir := fs.String("tls-dir", "", "`directory` of a bundle written by \"memservice certs\" (sets --tls-ca, --tls-cert, --tls-key)")
	fs.StringVar(&cfg.TLS.CAFile, "tls-ca", "", "CA bundle that signs client certificates")
	fs.StringVar(&cfg.TLS.CertFile, "tls-cert", "", "server certificate")
	fs.StringVar(&cfg.TLS.KeyFile, "tls-key", "", "server key")
	fs.DurationVar(&cfg.ReservationTTL, "reservation-ttl", service.DefaultReservationTTL, "how long a Reserved entry lives unless provisioned")
	fs.DurationVar(&cfg.ProvisionGracePeriod, "provision-grace-period", service.DefaultProvisionGracePeriod, "provisioned memory whose claim got no pod within this is released")
	fs.DurationVar(&cfg.AgentCommandTimeout, "agent-command-timeout", service.DefaultAgentCommandTimeout, "how long to wait for a node agent to online memory")
	fs.DurationVar(&cfg.PoolStatusInterval, "pool-status-interval", service.DefaultPoolStatusInterval,
		fmt.Sprintf("least time between two status writes of the DynamicMemoryPools (at least %s): a change is written this long after it, with every change made meanwhile", service.MinPoolStatusInterval))
	fs.BoolVar(&cfg.LeaderElection.Enabled, "leader-elect", true, "elect a leader on a Lease; only the leader serves")
	fs.StringVar(&cfg.LeaderElection.Namespace, "leader-elect-namespace", "dynamic-memory", "namespace of the Lease")
	fs.StringVar(&cfg.LeaderElection.Name, "leader-elect-name", "memservice", "name of the Lease")
	fs.StringVar(&cfg.LeaderElection.Identity, "leader-elect-identity", "", "this instance's identity in the Lease (default: hostname)")
	kubeQPS := fs.Float64("kube-api-qps", 200, "queries per second to the Kubernetes API server (client-side limit; a claim costs about three writes to provision, its DynamicMemoryClaim written before the hardware acts, and three to release)")
	kubeBurst := fs.Int("kube-api-burst", 400, "burst of queries to the Kubernetes API server above --kube-api-qps")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *showVersion {
		fmt.Println(version.Version)
		return nil
	}
	if cfg.PoolStatusInterval < service.MinPoolStatusInterval {
		return fmt.Errorf("--pool-status-interval must be at least %s, got %s", service.MinPoolStatusInterval, cfg.PoolStatusInterval)
	}
	if *tlsDir != "" {
		b := pki.Bundle{Dir: *tlsDir}
		setDefault(&cfg.TLS.CAFile, b.CAFile())
		setDefault(&cfg.TLS.CertFile, b.CertFile("server"))
		setDefault(&cfg.TLS.KeyFile, b.KeyFile("server"))
	}
	if cfg.LeaderElection.Enabled && cfg.LeaderElection.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--leader-elect-identity: hostname: %w", err)
		}
		cfg.LeaderElection.Identity = host
	}
	restConfig, err := loadRESTConfig(*kubeconfig)
	if err != nil {
		return err
	}
	restConfig.UserAgent = "memservice/" + version.Version
	restConfig.QPS, restConfig.Burst = float32(*kubeQPS), *kubeBurst
	cfg.RESTConfig = restConfig

	svc, err := service.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := klog.Background()
	ctx = klog.NewContext(ctx, logger)
	logger.Info("Memory service starting", "version", version.Version, "grpc", svc.Addr(), "metrics", svc.MetricsAddr(),
		"leaderElection", cfg.LeaderElection.Enabled)
	err = svc.Run(ctx)
	klog.Flush()
	return err
}

func setDefault(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

func loadRESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Clean(kubeconfig))
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, errors.New("not running in a cluster: pass --kubeconfig")
	}
	if err != nil {
		return nil, fmt.Errorf("in-cluster config: %w", err)
	}
	cfg.Timeout = 30 * time.Second
	return cfg, nil
}
