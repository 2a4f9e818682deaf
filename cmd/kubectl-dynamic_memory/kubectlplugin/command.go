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

// Package kubectlplugin implements `kubectl dynamic-memory`: read-only views of
// DynamicMemoryClaims, DynamicMemoryPools, node memory and the reasons a pod got (or did
// not get) dynamic memory.
//
// Each command follows the kubectl shape: an Options struct with Complete, Validate and
// Run, flags from cli-runtime's ConfigFlags, output to IOStreams.
package kubectlplugin

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/dynamicmemory/kube-dynamic-memory/api/client/clientset/versioned"
)

// Names of the project that the plugin reads and api/ does not declare.
const (
	// OnlineMemoryResource is the extended resource the node agent keeps on node status.
	OnlineMemoryResource = "dynamicmemory.io/online-memory"
)

// Clients are the API clients the commands use.
type Clients struct {
	Kube          kubernetes.Interface
	DynamicMemory versioned.Interface
}

// Environment is what every command shares: flags, streams, clock and how to reach the
// cluster. Tests replace NewClients with fakes and Clock with a fixed clock.
type Environment struct {
	Streams genericiooptions.IOStreams
	Flags   *genericclioptions.ConfigFlags
	Clock   clock.PassiveClock
	// NewClients builds the clients; nil means from Flags.
	NewClients func(*genericclioptions.ConfigFlags) (*Clients, error)
}

// NewCommand returns the root command of the plugin, reading kubeconfig flags.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	return NewCommandWithEnvironment(&Environment{
		Streams: streams,
		Flags:   genericclioptions.NewConfigFlags(true),
		Clock:   clock.RealClock{},
	})
}

// NewCommandWithEnvironment returns the root command with the given environment.
func NewCommandWithEnvironment(env *Environment) *cobra.Command {
	if env.NewClients == nil {
		env.NewClients = clientsFromFlags
	}
	root := &cobra.Command{
		Use:   "kubectl-dynamic_memory",
		Short: "Show dynamic memory claims, pools and nodes, and why a pod got its memory or not",
		Long: `kubectl dynamic-memory shows elastic memory from CXL Dynamic Capacity Devices:
the DynamicMemoryClaims that hold pool memory for pods, the DynamicMemoryPools,
static and dynamic memory per node, and why a pod is Pending or what it got.`,
		Example: `  kubectl dynamic-memory get claims -A
  kubectl dynamic-memory describe claim web-mem-7xk2p -n shop
  kubectl dynamic-memory get pools
  kubectl dynamic-memory top nodes
  kubectl dynamic-memory why web-0 -n shop
  kubectl dynamic-memory version`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Annotations: map[string]string{
			cobra.CommandDisplayNameAnnotation: "kubectl dynamic-memory",
		},
	}
	root.SetIn(env.Streams.In)
	root.SetOut(env.Streams.Out)
	root.SetErr(env.Streams.ErrOut)
	env.Flags.AddFlags(root.PersistentFlags())

	get := newGroupCommand("get (claims | pools)", "List DynamicMemoryClaims or DynamicMemoryPools", "claims", "pools")
	get.AddCommand(newGetClaimsCommand(env), newGetPoolsCommand(env))
	describe := newGroupCommand("describe claim NAME", "Show one DynamicMemoryClaim in detail, with a timeline", "claim")
	describe.AddCommand(newDescribeClaimCommand(env))
	top := newGroupCommand("top nodes", "Show static and dynamic memory per node", "nodes")
	top.AddCommand(newTopNodesCommand(env))
	root.AddCommand(get, describe, top, newWhyCommand(env), newVersionCommand(env))
	return root
}

// newGroupCommand returns a command that only holds subcommands: without one it prints
// its help, with an unknown one it says which exist.
func newGroupCommand(use, short string, subcommands ...string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return oneLine(fmt.Sprintf("unknown resource %q for %q: use %s", args[0], cmd.CommandPath(), strings.Join(subcommands, " or ")))
		},
	}
}

// clientsFromFlags builds real clients from the kubeconfig flags.
func clientsFromFlags(flags *genericclioptions.ConfigFlags) (*Clients, error) {
	config, err := flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("create Kubernetes client: %w", err)
	}
	dm, err := versioned.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("create dynamicmemory.io client: %w", err)
	}
	return &Clients{Kube: kube, DynamicMemory: dm}, nil
}

// session is what a command holds once completed: clients and the namespace to use.
type session struct {
	env       *Environment
	clients   *Clients
	namespace string
	// server is the API server address, for error messages.
	server string
}

// newSession resolves the namespace and builds the clients.
func newSession(env *Environment) (*session, error) {
	s := &session{env: env, server: serverOf(env.Flags)}
	ns, _, err := env.Flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, explain(err, s.server)
	}
	s.namespace = ns
	clients, err := env.NewClients(env.Flags)
	if err != nil {
		return nil, explain(err, s.server)
	}
	s.clients = clients
	return s, nil
}

// serverOf returns the API server address the flags point at, or "" when unknown.
func serverOf(flags *genericclioptions.ConfigFlags) string {
	if flags.APIServer != nil && *flags.APIServer != "" {
		return *flags.APIServer
	}
	config, err := flags.ToRawKubeConfigLoader().ClientConfig()
	if err != nil {
		return ""
	}
	return config.Host
}
