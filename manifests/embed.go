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
