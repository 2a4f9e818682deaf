#!/usr/bin/env bash
# Copyright The kube-dynamic-memory Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

# Generates the typed clientset, listers and informers of the dynamicmemory.io API
# into api/client with k8s.io/code-generator (built into bin/ by the Makefile).
# Called by `make generate`; output is committed and checked by `make verify`.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${root}/bin"
module=github.com/dynamicmemory/kube-dynamic-memory
api="${module}/api/v1alpha1"
out="${root}/api/client"
out_pkg="${module}/api/client"
header="${root}/hack/boilerplate.go.txt"

cd "${root}"
rm -rf "${out}"
"${bin}/client-gen" --go-header-file "${header}" \
	--input-base "${module}" --input api/v1alpha1 \
	--clientset-name versioned \
	--output-dir "${out}/clientset" --output-pkg "${out_pkg}/clientset"
"${bin}/lister-gen" --go-header-file "${header}" \
	--output-dir "${out}/listers" --output-pkg "${out_pkg}/listers" \
	"${api}"
"${bin}/informer-gen" --go-header-file "${header}" \
	--output-dir "${out}/informers" --output-pkg "${out_pkg}/informers" \
	--versioned-clientset-package "${out_pkg}/clientset/versioned" \
	--listers-package "${out_pkg}/listers" \
	"${api}"
