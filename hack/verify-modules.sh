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

# Checks the Go modules: every module given is tidy (`go mod tidy -diff`), and the
# modules of the workspace (go.work) require the same version of each dependency they
# share, so that a module built on its own builds what the workspace tested.
# Usage: hack/verify-modules.sh MODULE_DIR...
set -euo pipefail
cd "$(dirname "$0")/.."

# Module path and absolute directory of each workspace module.
workspace=$(go work edit -json | sed -n 's/.*"DiskPath": "\(.*\)".*/\1/p' | while read -r d; do
	echo "$(cd "$d" && go mod edit -json | sed -n 's/^\t\t"Path": "\(.*\)",\{0,1\}$/\1/p' | head -1) $(cd "$d" && pwd)"
done)

# replacements prints the -replace flags that tidy_diff adds for module $1.
replacements() {
	local m=$1 path dir
	while read -r path dir; do
		if grep -Eq "^[[:space:]]*(require[[:space:]]+)?${path//./\\.}[[:space:]]+v" "$m/go.mod" &&
			! grep -Eq "^[[:space:]]*(replace[[:space:]]+)?${path//./\\.}([[:space:]]+v[^[:space:]]*)?[[:space:]]+=>" "$m/go.mod"; then
			echo "-replace=$path=$dir"
		fi
	done <<<"$workspace"
}

# tidy_command prints the commands that tidy module $1.
tidy_command() {
	local r
	r=$(replacements "$1")
	if [[ -z $r ]]; then
		echo "cd $1 && go mod tidy"
	else
		echo "cd $1 && go mod edit $(echo $r) && go mod tidy && go mod edit $(echo "$r" | sed 's/^-replace=\([^=]*\)=.*/-dropreplace=\1/' | paste -sd' ')"
	fi
}

# tidy_diff runs `go mod tidy -diff` in module $1. A module that requires another
# workspace module by version, without a replace (so that `go install` accepts it: the
# kubectl plugin), is tidied with that module replaced by the workspace's copy, in a
# temporary go.mod: what tidy would write for the copy in this tree.
tidy_diff() {
	local m=$1 replaces
	mapfile -t replaces < <(replacements "$m")
	if [[ ${#replaces[@]} -eq 0 ]]; then
		(cd "$m" && go mod tidy -diff)
		return
	fi
	local tmp
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	cp "$m/go.mod" "$tmp/go.mod"
	[[ ! -f $m/go.sum ]] || cp "$m/go.sum" "$tmp/go.sum"
	(cd "$m" && go mod edit "${replaces[@]}" "$tmp/go.mod" && go mod tidy -diff -modfile="$tmp/go.mod")
}

failed=0
for m in "$@"; do
	if ! out=$(tidy_diff "$m" 2>&1); then
		echo "module $m is not tidy: run '$(tidy_command "$m")' and commit" >&2
		echo "$out" | grep -v '^go: downloading' >&2 || true
		failed=1
	fi
done

# path version module, for every requirement of every workspace module.
reqs=$(go work edit -json | sed -n 's/.*"DiskPath": "\(.*\)".*/\1/p' | while read -r m; do
	(cd "$m" && go mod edit -json) |
		awk -v m="$m" '/"Require"/ {in_req=1} in_req && /"Path"/ {gsub(/[",]/, "", $2); p=$2}
			in_req && /"Version"/ {gsub(/[",]/, "", $2); print p, $2, m} /^\t\]/ {in_req=0}'
done)
# Paths required at more than one version, with the versions and who requires them.
mismatched=$(echo "$reqs" | sort -k1,1 -k2,2 | awk '
	$1 != path { if (n > 1) print line; path = $1; ver = $2; n = 1; line = $1 ": " $2 " (" $3 ")"; next }
	$2 != ver { ver = $2; n++; line = line ", " $2 " (" $3 ")"; next }
	{ line = line " (" $3 ")" }
	END { if (n > 1) print line }')
if [[ -n $mismatched ]]; then
	echo "workspace modules require different versions of a shared dependency; align them with 'go get' in each module:" >&2
	echo "$mismatched" >&2
	failed=1
fi
exit $failed
