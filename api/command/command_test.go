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

package command

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	cliflag "k8s.io/component-base/cli/flag"
)

type fakeOptions struct {
	node string
	ran  bool
}

func (o *fakeOptions) AddFlags(fss *cliflag.NamedFlagSets) {
	fss.FlagSet("node").StringVar(&o.node, "node-name", "", "the node.")
}

func (o *fakeOptions) Run(ctx context.Context) error {
	o.ran = ctx != nil
	return nil
}

func TestHelpListsEverySectionOfEveryBinary(t *testing.T) {
	cmd := New("fake", "a fake binary", "", &fakeOptions{})
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--help"})
	require.NoError(t, cmd.Execute())
	for _, want := range []string{"Node flags:", "--node-name", "Logging flags:", "--logging-format", "-v, --v", "Global flags:", "--version"} {
		assert.Contains(t, out.String(), want)
	}
}

func TestFlagsAreParsedBeforeRun(t *testing.T) {
	o := &fakeOptions{}
	cmd := New("fake", "a fake binary", "", o)
	cmd.SetArgs([]string{"--node-name=n1", "--logging-format=json", "-v=2"})
	require.NoError(t, cmd.Execute())
	assert.True(t, o.ran)
	assert.Equal(t, "n1", o.node)
}

func TestBadLoggingFormatIsRefusedBeforeRun(t *testing.T) {
	o := &fakeOptions{}
	cmd := New("fake", "a fake binary", "", o)
	cmd.SetArgs([]string{"--logging-format=xml"})
	err := cmd.Execute()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "format")
	assert.False(t, o.ran)
}

func TestArgumentsAreRefused(t *testing.T) {
	o := &fakeOptions{}
	cmd := New("fake", "a fake binary", "", o)
	cmd.SetArgs([]string{"serve"})
	require.Error(t, cmd.Execute())
	assert.False(t, o.ran)
}

func TestRESTConfigNamesTheKubeconfigFlag(t *testing.T) {
	k := KubeClient{Kubeconfig: "/does/not/exist", QPS: 5, Burst: 10}
	_, err := k.RESTConfig("fake")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--kubeconfig /does/not/exist")
}
