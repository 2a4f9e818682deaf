package pki

import "github.com/prometheus/client_golang/prometheus"

// ExpiryMetric is the gauge of NewExpiryCollector: when each certificate the process
// presents expires, in seconds since the epoch, by file.
const ExpiryMetric = "dynamic_memory_certificate_expiry_timestamp_seconds"

// NewExpiryCollector collects ExpiryMetric for every certificate this process loaded
// (CertificateExpiries). Each component registers it with its metrics.
func NewExpiryCollector() prometheus.Collector {
	return expiryCollector{desc: prometheus.NewDesc(ExpiryMetric,
		"When the certificate in use expires (seconds since the epoch), by certificate file. A renewed file is used for new connections without a restart.",
		[]string{"file"}, nil)}
}

type expiryCollector struct{ desc *prometheus.Desc }

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	for file, at := range CertificateExpiries() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(at.Unix()), file)
	}
}
