// Package config holds the scheduler's KubeSchedulerConfiguration
// (scheduler-config.yaml, the file deployments mount) and renders it for other
// environments: the local cluster and the tests point it at their own kubeconfig,
// memory service and certificates.
package config

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	configv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/dynamicmemory/kube-dynamic-memory/plugins/dynamicmemory"
)

// Profile names of the configuration.
const (
	DefaultProfile       = "default-scheduler"
	DynamicMemoryProfile = "dynamic-memory-scheduler"
)

// YAML is scheduler-config.yaml as shipped.
//
//go:embed scheduler-config.yaml
var YAML []byte

// Options changes the shipped configuration. Empty fields keep the shipped values.
type Options struct {
	// Kubeconfig is the scheduler's kubeconfig (clientConnection.kubeconfig).
	Kubeconfig string
	// LeaderElect turns leader election on or off (nil: shipped value, on).
	LeaderElect *bool
	// Args replaces the DynamicMemory plugin's args.
	Args *dynamicmemory.DynamicMemoryArgs
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
		raw, err := json.Marshal(o.Args)
		if err != nil {
			return nil, fmt.Errorf("encode %s args: %w", dynamicmemory.Name, err)
		}
		found := false
		for i := range cfg.Profiles {
			for j := range cfg.Profiles[i].PluginConfig {
				if pc := &cfg.Profiles[i].PluginConfig[j]; pc.Name == dynamicmemory.Name {
					pc.Args = runtime.RawExtension{Raw: raw}
					found = true
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("scheduler-config.yaml has no pluginConfig for %s", dynamicmemory.Name)
		}
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
