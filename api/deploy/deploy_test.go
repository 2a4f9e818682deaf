package deploy

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestVersionLabelValue(t *testing.T) {
	for version, want := range map[string]string{
		"v0.3.0":                             "v0.3.0",
		"v0.3.0-2-gdb1976f-dirty":            "v0.3.0-2-gdb1976f-dirty",
		"api/v0.3.0":                         "api_v0.3.0",
		"v0.3.0+build.7":                     "v0.3.0_build.7",
		"(devel)":                            "devel",
		"v1.2.3-" + string(make([]byte, 70)): "v1.2.3",
	} {
		got := VersionLabelValue(version)
		assert.Equal(t, want, got, "version %q", version)
		assert.Empty(t, validation.IsValidLabelValue(got), "version %q", version)
	}
}
