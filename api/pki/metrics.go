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
