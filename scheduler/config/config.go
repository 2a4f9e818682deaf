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

// Package config renders the scheduler's shipped KubeSchedulerConfiguration
// (manifests.SchedulerConfig, the file the Deployment mounts) for other
// environments: the local cluster and the tests point it at their own kubeconfig,
// memory service and certificates.
package config

import (
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	configv1 "k8s.io/kube-scheduler/config/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/manifests"
	pluginconfig "github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory/apis/config"
)

// Profile names of the configuration.
const (
	DefaultProfile       = "default-scheduler"
	DynamicMemoryProfile = "dynamic-memory-scheduler"
	// BaselineProfile is the profile the benchmarks add (Options.Baseline): the
	// stock plugins without DynamicMemory, what the shipped profiles are measured
	// against.
	BaselineProfile = "without-dynamic-memory"
)

// YAML is the configuration as shipped: the chart's scheduler ConfigMap rendered with
// its default values (manifests/scheduler/configmap.yaml).
var YAML = manifests.SchedulerConfig

// Options changes the shipped configuration. Empty fields keep the shipped values.
type Options struct {
	// Kubeconfig is the scheduler's kubeconfig (clientConnection.kubeconfig).
	Kubeconfig string
	// LeaderElect turns leader election on or off (nil: shipped value, on).
	LeaderElect *bool
	// Args replaces the DynamicMemory plugin's args. An empty apiVersion and kind
	// are filled in.
	Args *pluginconfig.DynamicMemoryArgs
	// Baseline adds the profile BaselineProfile.
	Baseline bool
}

// Render returns the shipped configuration with o applied, as YAML.
func Render(o Options) ([]byte, error) {
	var cfg configv1.KubeSchedulerConfiguration
	if err := yaml.UnmarshalStrict(YAML, &cfg); err != nil {
		return nil, fmt.Errorf("parse scheduler-config.yaml: %w", err)
	}
	if o.Kubeconfig != "" {
		cfg.ClientConnection.Kubeconfig = o.Kubeconfig
	}
	if o.LeaderElect != nil {
		cfg.LeaderElection.LeaderElect = o.LeaderElect
	}
	if o.Args != nil {
		args := o.Args.DeepCopy()
		if args.APIVersion == "" && args.Kind == "" {
			args.APIVersion, args.Kind = pluginconfig.SchemeGroupVersion.String(), pluginconfig.Kind
		}
		raw, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("encode %s args: %w", pluginconfig.PluginName, err)
		}
		found := false
		for i := range cfg.Profiles {
			for j := range cfg.Profiles[i].PluginConfig {
				if pc := &cfg.Profiles[i].PluginConfig[j]; pc.Name == pluginconfig.PluginName {
					pc.Args = runtime.RawExtension{Raw: raw}
					found = true
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("scheduler-config.yaml has no pluginConfig for %s", pluginconfig.PluginName)
		}
	}
	if o.Baseline {
		cfg.Profiles = append(cfg.Profiles, configv1.KubeSchedulerProfile{SchedulerName: ptr.To(BaselineProfile)})
	}
	out, err := yaml.Marshal(&cfg)
	if err != nil {
		return nil, fmt.Errorf("encode scheduler configuration: %w", err)
	}
	return out, nil
}

// Write renders the configuration into file.
func Write(file string, o Options) error {
	data, err := Render(o)
	if err != nil {
		return err
	}
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return fmt.Errorf("write scheduler configuration: %w", err)
	}
	return nil
}
