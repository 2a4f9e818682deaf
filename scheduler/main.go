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

// Command kube-scheduler is the Kubernetes scheduler with the DynamicMemory plugin
// compiled in. One binary serves both profiles of the shipped configuration (manifests):
// default-scheduler and dynamic-memory-scheduler, both the stock plugins plus
// DynamicMemory, so that a single scheduler allocates DRA claims and every pod with a
// dynamic memory claim gets its memory.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"

	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory"
)

func main() {
	command := app.NewSchedulerCommand(app.WithPlugin(dynamicmemory.Name, dynamicmemory.New))
	os.Exit(cli.Run(command))
}
