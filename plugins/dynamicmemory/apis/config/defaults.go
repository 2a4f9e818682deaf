package config

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of DynamicMemoryArgs.
const (
	DefaultReserveTimeout   = 5 * time.Second
	DefaultReleaseTimeout   = 5 * time.Second
	DefaultProvisionTimeout = 2 * time.Minute
)

// SetDefaults fills in the optional fields. PermitTimeout stays unset: its default
// depends on the pod (see DynamicMemoryArgs.PermitTimeout).
func SetDefaults(args *DynamicMemoryArgs) {
	if args.ReserveTimeout == nil {
		args.ReserveTimeout = &metav1.Duration{Duration: DefaultReserveTimeout}
	}
	if args.ReleaseTimeout == nil {
		args.ReleaseTimeout = &metav1.Duration{Duration: DefaultReleaseTimeout}
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
