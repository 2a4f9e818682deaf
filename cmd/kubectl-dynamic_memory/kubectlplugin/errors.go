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
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"

	"github.com/dynamicmemory/kube-dynamic-memory/api/v1alpha1"
)

// explain turns an error from building clients or talking to the API server into one
// line that says what is wrong and what to do. Errors already explained pass through.
func explain(err error, server string) error {
	if err == nil {
		return nil
	}
	var done *oneLineError
	if errors.As(err, &done) {
		return err
	}
	at := ""
	if server != "" {
		at = " at " + server
	}
	var urlErr *url.Error
	var netErr *net.OpError
	switch {
	case errors.As(err, &urlErr):
		return oneLine(fmt.Sprintf("cannot reach the Kubernetes API server%s: %v (is the cluster running? check --kubeconfig and --context)", at, urlErr.Err))
	case errors.As(err, &netErr):
		return oneLine(fmt.Sprintf("cannot reach the Kubernetes API server%s: %v (is the cluster running? check --kubeconfig and --context)", at, netErr))
	case apierrors.IsUnauthorized(err):
		return oneLine(fmt.Sprintf("the API server%s rejected the credentials: %v", at, err))
	case apierrors.IsForbidden(err):
		return oneLine(fmt.Sprintf("not allowed: %v", err))
	}
	return oneLine(err.Error())
}

// oneLineError is an error whose message is a single line, ready for the user.
type oneLineError struct{ msg string }

func (e *oneLineError) Error() string { return e.msg }

// oneLine makes an error of msg with any line breaks folded into "; ".
func oneLine(msg string) error {
	lines := strings.FieldsFunc(msg, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return &oneLineError{msg: strings.Join(slices.DeleteFunc(lines, func(s string) bool { return s == "" }), "; ")}
}

// ensureCRDs checks that the API server serves the project's resources, so that a
// missing CRD is reported as such and not as "not found".
func (s *session) ensureCRDs(ctx context.Context, resources ...string) error {
	gv := v1alpha1.SchemeGroupVersion.String()
	list, err := discovery.ToDiscoveryInterfaceWithContext(s.clients.Kube.Discovery()).ServerResourcesForGroupVersionWithContext(ctx, gv)
	if apierrors.IsNotFound(err) {
		return oneLine(fmt.Sprintf("the dynamic memory CRDs are not installed (the API server does not serve %s): install them with kubectl apply -k manifests/crds", gv))
	}
	if err != nil {
		return explain(err, s.server)
	}
	for _, want := range resources {
		if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == want }) {
			return oneLine(fmt.Sprintf("the CRD %s.%s is not installed: install it with kubectl apply -k manifests/crds", want, v1alpha1.GroupName))
		}
	}
	return nil
}
