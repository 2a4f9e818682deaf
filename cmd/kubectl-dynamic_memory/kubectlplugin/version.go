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
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	utilversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/dynamicmemory/kube-dynamic-memory/api/deploy"
	"github.com/dynamicmemory/kube-dynamic-memory/api/version"
)

// VersionOptions prints the plugin's version and the memory service's.
type VersionOptions struct {
	env     *Environment
	session *session
	Client  bool
}

func newVersionCommand(env *Environment) *cobra.Command {
	o := &VersionOptions{env: env}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version and the memory service's",
		Long: `Print the version of this plugin (the client) and of the memory service (the server).

The memory service's version is read from its leader-election Lease
` + deploy.Namespace + `/` + deploy.MemoryServiceName + ` (label ` + deploy.VersionLabel + `), with your kubeconfig's
credentials: reading it needs get on leases in ` + deploy.Namespace + `. The command fails, after
printing the client version, when the memory service is not running or too old to
publish its version.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Client {
				return o.printClient()
			}
			if err := o.Complete(); err != nil {
				return err
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().BoolVar(&o.Client, "client", false, "Print the client version only; do not contact the cluster.")
	return cmd
}

// Complete builds the clients.
func (o *VersionOptions) Complete() error {
	s, err := newSession(o.env)
	if err != nil {
		return err
	}
	o.session = s
	return nil
}

func (o *VersionOptions) printClient() error {
	_, err := fmt.Fprintf(o.env.Streams.Out, "Client Version: %s\n", version.Version)
	return err
}

// Run prints the client version, then the server version read from the Lease.
func (o *VersionOptions) Run(ctx context.Context) error {
	if err := o.printClient(); err != nil {
		return err
	}
	server, holder, err := o.serverVersion(ctx)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(o.env.Streams.Out, "Server Version: %s (memory service instance %s)\n", server, holder); err != nil {
		return err
	}
	if older(server, version.Version) {
		_, err := fmt.Fprintf(o.env.Streams.ErrOut, "Warning: the memory service (%s) is an older release than this plugin (%s): upgrade it, or use the plugin of its release.\n", server, version.Version)
		return err
	}
	return nil
}

// serverVersion reads the version of the memory service instance that holds the Lease,
// and that instance; an error says why there is none.
func (o *VersionOptions) serverVersion(ctx context.Context) (string, string, error) {
	s := o.session
	ref := deploy.Namespace + "/" + deploy.MemoryServiceName
	lease, err := s.clients.Kube.CoordinationV1().Leases(deploy.Namespace).Get(ctx, deploy.MemoryServiceName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return "", "", oneLine(fmt.Sprintf("the memory service is unreachable: its Lease %s does not exist, so no instance has ever run with leader election in this cluster (is it installed? kubectl get deployment -n %s)", ref, deploy.Namespace))
	case apierrors.IsForbidden(err):
		return "", "", oneLine(fmt.Sprintf("cannot read the memory service's version: you may not get the Lease %s (the version command needs get on leases in namespace %s): %v", ref, deploy.Namespace, err))
	case err != nil:
		return "", "", explain(fmt.Errorf("get Lease %s: %w", ref, err), s.server)
	}
	spec := lease.Spec
	serverVersion, published := lease.Labels[deploy.VersionLabel]
	holder := ""
	if spec.HolderIdentity != nil {
		holder = *spec.HolderIdentity
	}
	now := o.env.Clock.Now()
	if holder == "" || spec.RenewTime == nil || spec.LeaseDurationSeconds == nil ||
		now.After(spec.RenewTime.Add(time.Duration(*spec.LeaseDurationSeconds)*time.Second)) {
		last := "never renewed"
		if spec.RenewTime != nil {
			last = "last renewed " + duration.HumanDuration(now.Sub(spec.RenewTime.Time)) + " ago"
		}
		if published {
			last += ", by version " + serverVersion
		}
		return "", "", oneLine(fmt.Sprintf("the memory service is unreachable: no instance holds its Lease %s (%s); check its pods: kubectl get pods -n %s", ref, last, deploy.Namespace))
	}
	if !published || serverVersion == "" {
		return "", "", oneLine(fmt.Sprintf("the memory service instance %s is too old to report its version (its Lease %s has no %s label): upgrade it to this plugin's version, %s", holder, ref, deploy.VersionLabel, version.Version))
	}
	return serverVersion, holder, nil
}

// older reports whether server is an older minor release than client; versions that
// are not semantic (a development build) are not compared.
func older(server, client string) bool {
	s, err := utilversion.ParseSemantic(server)
	if err != nil {
		return false
	}
	c, err := utilversion.ParseSemantic(client)
	if err != nil {
		return false
	}
	return s.Major() < c.Major() || s.Major() == c.Major() && s.Minor() < c.Minor()
}
