// Package config holds the DynamicMemory plugin's args, DynamicMemoryArgs, with their
// defaults and validation: what a KubeSchedulerConfiguration sets under the plugin's
// pluginConfig entry. Code that renders or checks a scheduler configuration imports
// this package, not the plugin.
package config
