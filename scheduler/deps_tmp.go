package main

import (
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/pkg/scheduler/framework/plugins/dynamicresources"
	_ "k8s.io/kubernetes/test/integration/scheduler_perf"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/cli-runtime/pkg/genericclioptions"
	_ "k8s.io/dynamic-resource-allocation/kubeletplugin"
	_ "github.com/stretchr/testify/require"
	_ "google.golang.org/grpc"
	_ "k8s.io/utils/clock"
)

func main() {}
