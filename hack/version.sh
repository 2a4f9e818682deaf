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

# The project's version, stamped into every binary, image and chart (docs/releasing.md).
#
#   hack/version.sh                  the version of the git checkout in the current directory
#   hack/version.sh check VERSION    fail, saying why, unless VERSION is a semantic version
#   hack/version.sh ldflags VERSION  the Go linker flags that stamp VERSION into a binary
#
# A checkout's version is its tag vX.Y.Z when HEAD carries one and nothing is changed:
# a release. Otherwise it says it is a development build, in git describe's form
# vX.Y.Z-N-gSHA[-dirty]: N commits after the tag vX.Y.Z (v0.0.0 before the first tag),
# at commit SHA, with uncommitted changes when -dirty. Both forms are semantic versions.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FORM='vMAJOR.MINOR.PATCH, optionally followed by -PRERELEASE and +BUILD (semver.org), e.g. v0.1.0, v0.2.0-rc.1 or v0.1.0-5-g1a2b3c4'

die() { echo "version: $*" >&2; exit 1; }

current() {
	git rev-parse --git-dir >/dev/null 2>&1 ||
		die "not a git checkout, so the version is unknown: set VERSION to $FORM"
	git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null && return
	# No tag yet: count from v0.0.0 the way git describe counts from a tag.
	local dirty=""
	git diff --quiet HEAD -- || dirty=-dirty
	echo "v0.0.0-$(git rev-list --count HEAD)-g$(git rev-parse --short HEAD)$dirty"
}

check() {
	local v=$1 num='(0|[1-9][0-9]*)' id='(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)' build='[0-9A-Za-z-]+'
	[[ -n $v ]] || die "VERSION is empty: set it to $FORM"
	[[ $v =~ ^v$num\.$num\.$num(-$id(\.$id)*)?(\+$build(\.$build)*)?$ ]] ||
		die "VERSION \"$v\" is not a semantic version: want $FORM"
}

ldflags() {
	check "$1"
	local kube
	kube=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$ROOT/go.mod")
	[[ -n $kube ]] || die "no k8s.io/kubernetes requirement in $ROOT/go.mod"
	# component-base's version (kube-scheduler --version, the API server's view of the
	# client) is the Kubernetes release the binary is built from, marked as this project's.
	echo "-X k8s.io/component-base/version.gitVersion=$kube-dynamicmemory-$1" \
		"-X github.com/dynamicmemory/kube-dynamic-memory/api/version.Version=$1"
}

case "${1:-}" in
"") current ;;
check) check "${2:-}" ;;
ldflags) ldflags "${2:-}" ;;
*) die "unknown command \"$1\": want no argument, check VERSION or ldflags VERSION" ;;
esac
