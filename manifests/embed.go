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

// Package manifests gives Go code the shipped files that programs also need, so that
// each exists once. Every YAML file here but the kustomizations and samples/ is the
// Helm chart charts/kube-dynamic-memory rendered with its default values
// (make generate).
package manifests

import (
	_ "embed"
	"fmt"

	"sigs.k8s.io/yaml"
)

// schedulerConfigMap is scheduler/configmap.yaml: the ConfigMap the scheduler
// Deployment mounts.
//
//go:embed scheduler/configmap.yaml
var schedulerConfigMap []byte

// SchedulerConfig is the scheduler's KubeSchedulerConfiguration as the chart ships it
// (the key scheduler-config.yaml of the ConfigMap dynamic-memory-scheduler-config),
// which scheduler/config renders for other environments.
var SchedulerConfig = configMapKey(schedulerConfigMap, "scheduler-config.yaml")

// configMapKey returns one key of a ConfigMap's data. The file is generated and
// checked by the tests, so a missing key is a build defect: it panics.
func configMapKey(data []byte, key string) []byte {
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(data, &cm); err != nil {
		panic(fmt.Sprintf("manifests: decode the scheduler ConfigMap: %v", err))
	}
	v, ok := cm.Data[key]
	if !ok {
		panic(fmt.Sprintf("manifests: the scheduler ConfigMap has no key %s", key))
	}
	return []byte(v)
}
