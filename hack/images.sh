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

# Build the container images of the in-cluster components from ./Dockerfile.
#   hack/images.sh [REPO] [VERSION] [TAG]   (make images: REPO=$(IMAGE_REPO) VERSION=$(VERSION))
# Images: REPO/memservice, REPO/kube-scheduler, REPO/node-agent, REPO/dra-plugin, their
# binaries and OCI labels stamped with VERSION (default: hack/version.sh), tagged TAG
# (default: VERSION, its '+' written '_' as a tag cannot hold one).
# Needs a running Docker engine (DOCKER names another compatible CLI, e.g. podman).
# PUSH=1 builds them for PLATFORMS (default linux/amd64,linux/arm64) with docker buildx
# and pushes them, after `docker login` to REPO's registry (docs/releasing.md).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=${1:-ghcr.io/dynamicmemory}
VERSION=${2:-}
TAG=${3:-}
DOCKER=${DOCKER:-docker}
PLATFORMS=${PLATFORMS:-linux/amd64,linux/arm64}
TARGETS=(memservice kube-scheduler node-agent dra-plugin)

die() { echo "images: $*" >&2; exit 1; }

command -v "$DOCKER" >/dev/null 2>&1 ||
  die "'$DOCKER' not found: building images needs Docker (or set DOCKER to a compatible CLI). Without one, use the local cluster: make demo"
"$DOCKER" info >/dev/null 2>&1 ||
  die "no Docker engine is running ('$DOCKER info' failed): start the Docker daemon and retry"

VERSION=${VERSION:-$(cd "$ROOT" && hack/version.sh)}
"$ROOT/hack/version.sh" check "$VERSION"
TAG=${TAG:-${VERSION//+/_}}
REVISION=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
build=(build)
if [[ ${PUSH:-} == 1 ]]; then
  build=(buildx build --platform "$PLATFORMS" --push)
fi

for target in "${TARGETS[@]}"; do
  image="$REPO/$target:$TAG"
  echo "images: building $image"
  "$DOCKER" "${build[@]}" --target "$target" --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" -t "$image" "$ROOT"
done
echo "images: $([[ ${PUSH:-} == 1 ]] && echo "pushed for $PLATFORMS" || echo built) ${TARGETS[*]} as $REPO/<name>:$TAG ($VERSION)"
