// Package manifests gives Go code the files of the shipped manifests that programs
// also need, so that each exists once: kustomize builds the cluster's objects from
// the same files.
package manifests

import _ "embed"

// SchedulerConfig is scheduler/scheduler-config.yaml: the scheduler's
// KubeSchedulerConfiguration, which kustomize puts into the ConfigMap the scheduler
// Deployment mounts, and which scheduler/config renders for other environments.
//
//go:embed scheduler/scheduler-config.yaml
var SchedulerConfig []byte
