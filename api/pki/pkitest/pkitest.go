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

// Package pkitest helps tests of components that use package pki.
package pkitest

import (
	"testing"

	"github.com/dynamicmemory/kube-dynamic-memory/api/pki"
)

// LoadCertificate writes a development bundle and loads its scheduler certificate as
// a client would, so that the process has a certificate in use (for the metrics of
// pki.NewExpiryCollector). It returns the certificate file.
func LoadCertificate(t testing.TB) string {
	t.Helper()
	b, err := pki.WriteBundle(t.TempDir(), []string{"127.0.0.1"}, nil)
	if err != nil {
		t.Fatalf("write a certificate bundle: %v", err)
	}
	if _, err := pki.ClientTLSConfig(b.CertFile("scheduler"), b.KeyFile("scheduler"), b.CAFile(), ""); err != nil {
		t.Fatalf("load a certificate: %v", err)
	}
	return b.CertFile("scheduler")
}
