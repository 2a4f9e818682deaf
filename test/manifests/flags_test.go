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

package manifests

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
)

// TestManifestFlagsExistInBinaries runs every binary the manifests and the chart's
// value sets start with --help (from bin/, built by make build) and checks that each
// flag the Deployments and DaemonSets pass is one the binary knows, so that the chart
// and code cannot drift.
func TestManifestFlagsExistInBinaries(t *testing.T) {
	root := repoRoot(t)
	sets := map[string][]*unstructured.Unstructured{"manifests": build(t, "manifests")}
	for _, set := range valueSets {
		sets[set] = render(t, "-f", valuesFile(t, set))
	}
	for dir, objs := range sets {
		for _, o := range objs {
			if o.GetKind() != "Deployment" && o.GetKind() != "DaemonSet" {
				continue
			}
			var spec struct {
				Spec struct {
					Template corev1.PodTemplateSpec `json:"template"`
				} `json:"spec"`
			}
			require.NoError(t, k8sruntime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &spec))
			for _, c := range spec.Spec.Template.Spec.Containers {
				image, _, _ := strings.Cut(c.Image, ":")
				binary := filepath.Join(root, "bin", path.Base(image))
				args := c.Args
				if len(c.Command) > 0 {
					args = append(append([]string(nil), c.Command[1:]...), args...)
				}
				t.Run(dir+"/"+o.GetName()+"/"+c.Name, func(t *testing.T) {
					if _, err := os.Stat(binary); err != nil {
						t.Skipf("%s not built (make build): cannot check the flags of %s", binary, c.Image)
					}
					help := helpText(t, binary)
					for _, arg := range args {
						name, ok := flagName(arg)
						if !ok {
							continue
						}
						pattern := regexp.MustCompile(`(?m)^\s+(-\w, )?--?` + regexp.QuoteMeta(name) + `(\s|=|$)`)
						assert.Regexp(t, pattern, help, "%s passes %s, which %s --help does not list", o.GetName(), arg, filepath.Base(binary))
					}
				})
			}
		}
	}
}

// flagName returns the name of a --flag or --flag=value argument.
func flagName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "-") {
		return "", false
	}
	name, _, _ := strings.Cut(strings.TrimLeft(arg, "-"), "=")
	return name, name != ""
}

// helpText returns what binary --help prints (stdout and stderr; the exit code of a
// help request differs between flag packages).
func helpText(t *testing.T, binary string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, binary, "--help").CombinedOutput()
	require.NotEmpty(t, out, "%s --help printed nothing", binary)
	return string(out)
}
