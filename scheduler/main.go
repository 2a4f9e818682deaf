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
