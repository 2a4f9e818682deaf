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

# Prepares a Debian 13 (trixie) root holding QEMU 10 (CXL Dynamic Capacity Device
# emulation) for the memory service's real QEMU test: `make qemu-root` runs it with the
# root directory as its argument, and the test reads it from $QEMU_ROOT.
#
# Only as root (debootstrap and chroot need it), and only once: a finished root has a
# stamp file and is left alone. The Debian mirror is the one this machine's apt
# configuration uses (/etc/apt/sources.list, /etc/apt/sources.list.d/*).
set -euo pipefail

dir=${1:?usage: hack/qemu-root.sh DIR}
dir=${dir%/}
case "$dir" in
  "" | / | /usr | /etc | /var | /home | /root) echo "qemu-root: refusing to use $1 as the root directory" >&2; exit 2 ;;
esac
stamp="$dir/.qemu-root-ready"

if [ "$(id -u)" != 0 ]; then
  echo "qemu-root: not running as root: skipping (debootstrap and chroot need root); the real QEMU test will be skipped"
  exit 0
fi
if [ -f "$stamp" ]; then
  echo "qemu-root: $dir is ready: $(cat "$stamp")"
  exit 0
fi

# mirror prints the first Debian archive URI of the apt configuration (one-line
# .list entries and deb822 .sources files), skipping the security archive.
mirror() {
  local files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk '
    /^[[:space:]]*#/ { next }
    /^[[:space:]]*deb[[:space:]]/ {
      for (i = 2; i <= NF; i++) if ($i ~ /^[a-z+]+:\/\//) { print $i; break }
      next
    }
    /^URIs:/ { for (i = 2; i <= NF; i++) print $i }
  ' "${files[@]}" | grep -E '/debian/?$' | grep -v -e security -e ports | head -n 1
}

url=$(mirror)
if [ -z "$url" ]; then
  echo "qemu-root: no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/; add one (a URI ending in /debian)" >&2
  exit 1
fi

if ! command -v debootstrap >/dev/null; then
  echo "qemu-root: installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
fi

work="$dir.partial"
cleanup() {
  umount "$work/proc" 2>/dev/null || true
}
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$(dirname "$dir")"

start=$(date +%s)
echo "qemu-root: debootstrap --variant=minbase trixie $work $url"
debootstrap --variant=minbase trixie "$work" "$url"
mount -t proc proc "$work/proc"
chroot "$work" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$work" apt-get install -y -qq --no-install-recommends qemu-system-x86
chroot "$work" apt-get clean
version=$(chroot "$work" qemu-system-x86_64 --version | head -n 1)
umount "$work/proc"
rm -rf "$dir"
mv "$work" "$dir"
echo "$version (prepared in $(( $(date +%s) - start ))s from $url)" > "$stamp"
echo "qemu-root: $dir is ready: $(cat "$stamp")"
