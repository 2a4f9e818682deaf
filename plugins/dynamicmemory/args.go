package dynamicmemory

import (
	"fmt"
	"net"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// ScoringStrategyType says how Score ranks the nodes that can get the memory.
type ScoringStrategyType string

const (
	// MostAllocated prefers the fullest pool: it packs pools and keeps whole pools
	// (and the hosts behind them) free for large claims.
	MostAllocated ScoringStrategyType = "MostAllocated"
	// LeastAllocated prefers the emptiest pool: it spreads claims across pools.
	LeastAllocated ScoringStrategyType = "LeastAllocated"
)

// Defaults of DynamicMemoryArgs.
const (
	DefaultReserveTimeout   = 5 * time.Second
	DefaultProvisionTimeout = 2 * time.Minute
)

// DynamicMemoryArgs configures the DynamicMemory plugin. In a KubeSchedulerConfiguration
// it is the args of the plugin's pluginConfig entry:
//
//	pluginConfig:
//	- name: DynamicMemory
//	  args:
//	    address: memservice.dynamic-memory.svc:8443
//	    caFile: /etc/dynamic-memory/tls/ca.crt
//	    certFile: /etc/dynamic-memory/tls/scheduler.crt
//	    keyFile: /etc/dynamic-memory/tls/scheduler.key
//	    reserveTimeout: 5s
//	    provisionTimeout: 2m
//	    scoringStrategy: {type: MostAllocated, localityWeight: 20}
type DynamicMemoryArgs struct {
	// TypeMeta may name the kind (DynamicMemoryArgs); it is not required.
	metav1.TypeMeta `json:",inline"`

	// Address is host:port of the memory service's gRPC endpoint. Required.
	Address string `json:"address"`
	// CAFile is the CA bundle that signed the memory service's certificate. Required.
	CAFile string `json:"caFile"`
	// CertFile and KeyFile are the scheduler's client certificate (role scheduler,
	// see api/pki) and key. Required.
	CertFile string `json:"certFile"`
	KeyFile  string `json:"keyFile"`
	// ServerName overrides the name checked in the memory service's certificate
	// (default: the host of Address).
	ServerName string `json:"serverName,omitempty"`

	// ReserveTimeout bounds the Reserve call made inside the scheduling cycle
	// (default 5s).
	ReserveTimeout *metav1.Duration `json:"reserveTimeout,omitempty"`
	// ProvisionTimeout bounds PreBind's wait for the memory to come online on the
	// node (default 2m). When it passes, the pod is retried and its memory released.
	ProvisionTimeout *metav1.Duration `json:"provisionTimeout,omitempty"`

	// ScoringStrategy ranks the nodes that can get the memory.
	ScoringStrategy *ScoringStrategy `json:"scoringStrategy,omitempty"`
}

// ScoringStrategy ranks feasible nodes by the pool their memory would come from.
type ScoringStrategy struct {
	// Type is MostAllocated (default) or LeastAllocated.
	Type ScoringStrategyType `json:"type,omitempty"`
	// LocalityWeight, 0 to 100, is the share of the score given to the pool's
	// latencyClass attribute (low > medium > high); the rest is given to Type.
	// Default 0.
	LocalityWeight int32 `json:"localityWeight,omitempty"`
}

// decodeArgs reads the plugin's args from the scheduler configuration. Unknown
// fields are errors, so that a misspelled field does not silently fall back to a
// default.
// path locates the args in the configuration, for error messages.
func decodeArgs(path *field.Path, obj runtime.Object) (*DynamicMemoryArgs, error) {
	args := &DynamicMemoryArgs{}
	switch a := obj.(type) {
	case nil:
	case *DynamicMemoryArgs:
		args = a.DeepCopy()
	case *runtime.Unknown:
		if len(a.Raw) > 0 {
			if err := yaml.UnmarshalStrict(a.Raw, args); err != nil {
				return nil, fmt.Errorf("decode %s: %w", path, err)
			}
		}
	default:
		return nil, fmt.Errorf("decode %s: want DynamicMemoryArgs, got %T", path, obj)
	}
	SetDefaults(args)
	if err := Validate(path, args).ToAggregate(); err != nil {
		return nil, fmt.Errorf("invalid %s args: %w", Name, err)
	}
	return args, nil
}

// SetDefaults fills in the optional fields.
func SetDefaults(args *DynamicMemoryArgs) {
	if args.ReserveTimeout == nil {
		args.ReserveTimeout = &metav1.Duration{Duration: DefaultReserveTimeout}
	}
	if args.ProvisionTimeout == nil {
		args.ProvisionTimeout = &metav1.Duration{Duration: DefaultProvisionTimeout}
	}
	if args.ScoringStrategy == nil {
		args.ScoringStrategy = &ScoringStrategy{}
	}
	if args.ScoringStrategy.Type == "" {
		args.ScoringStrategy.Type = MostAllocated
	}
}

// Validate checks defaulted args. Every error names its field under path.
func Validate(path *field.Path, args *DynamicMemoryArgs) field.ErrorList {
	var errs field.ErrorList
	if args.Kind != "" && args.Kind != "DynamicMemoryArgs" {
		errs = append(errs, field.Invalid(path.Child("kind"), args.Kind, "must be DynamicMemoryArgs or empty"))
	}
	if strings.TrimSpace(args.Address) == "" {
		errs = append(errs, field.Required(path.Child("address"), "the memory service's gRPC address, for example memservice.dynamic-memory.svc:8443"))
	} else if !strings.HasPrefix(args.Address, "unix://") {
		if _, port, err := net.SplitHostPort(args.Address); err != nil || port == "" {
			errs = append(errs, field.Invalid(path.Child("address"), args.Address, "must be host:port or unix:///path"))
		}
	}
	for _, f := range []struct{ name, value, what string }{
		{"caFile", args.CAFile, "the CA bundle that signed the memory service's certificate"},
		{"certFile", args.CertFile, "the scheduler's client certificate (organization dynamicmemory.io:scheduler)"},
		{"keyFile", args.KeyFile, "the key of certFile"},
	} {
		if strings.TrimSpace(f.value) == "" {
			errs = append(errs, field.Required(path.Child(f.name), f.what))
		}
	}
	for _, d := range []struct {
		name  string
		value *metav1.Duration
	}{{"reserveTimeout", args.ReserveTimeout}, {"provisionTimeout", args.ProvisionTimeout}} {
		if d.value != nil && d.value.Duration <= 0 {
			errs = append(errs, field.Invalid(path.Child(d.name), d.value.Duration.String(), "must be positive, for example 5s"))
		}
	}
	if s := args.ScoringStrategy; s != nil {
		sp := path.Child("scoringStrategy")
		switch s.Type {
		case MostAllocated, LeastAllocated:
		default:
			errs = append(errs, field.NotSupported(sp.Child("type"), s.Type, []ScoringStrategyType{MostAllocated, LeastAllocated}))
		}
		if s.LocalityWeight < 0 || s.LocalityWeight > 100 {
			errs = append(errs, field.Invalid(sp.Child("localityWeight"), s.LocalityWeight, "must be between 0 and 100"))
		}
	}
	return errs
}

// DeepCopy returns a copy of args.
func (args *DynamicMemoryArgs) DeepCopy() *DynamicMemoryArgs {
	out := *args
	if args.ReserveTimeout != nil {
		d := *args.ReserveTimeout
		out.ReserveTimeout = &d
	}
	if args.ProvisionTimeout != nil {
		d := *args.ProvisionTimeout
		out.ProvisionTimeout = &d
	}
	if args.ScoringStrategy != nil {
		s := *args.ScoringStrategy
		out.ScoringStrategy = &s
	}
	return &out
}

// DeepCopyObject makes DynamicMemoryArgs a runtime.Object, so it can be handed to
// the plugin factory directly (tests, benchmarks).
func (args *DynamicMemoryArgs) DeepCopyObject() runtime.Object { return args.DeepCopy() }
