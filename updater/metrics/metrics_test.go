package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNamesAreServed(t *testing.T) {
	m := New()
	m.Commands.WithLabelValues(CommandOnline, "online").Inc()
	m.CommandErrors.WithLabelValues(CommandOffline).Inc()
	m.OnlineDuration.Observe(0.002)
	m.OfflineDuration.Observe(0.001)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, 200, rec.Code)
	body := rec.Body.String()
	for _, name := range Names() {
		assert.True(t, strings.HasPrefix(name, "dynamic_memory_"), name)
		assert.Contains(t, body, "# TYPE "+name+" ", "metric %s is listed by Names but not served", name)
	}
}
