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
#   hack/images.sh [REPO] [TAG]     (make images: REPO=$(IMAGE_REPO) TAG=$(VERSION))
# Images: REPO/memservice, REPO/kube-scheduler, REPO/node-agent, REPO/dra-plugin.
# Needs a running Docker engine (DOCKER names another compatible CLI, e.g. podman).
set -euo pipefail

REPO=${1:-ghcr.io/dynamicmemory}
TAG=${2:-dev}
DOCKER=${DOCKER:-docker}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGETS=(memservice kube-scheduler node-agent dra-plugin)

die() { echo "images: $*" >&2; exit 1; }

command -v "$DOCKER" >/dev/null 2>&1 ||
  die "'$DOCKER' not found: building images needs Docker (or set DOCKER to a compatible CLI). Without one, use the local cluster: make demo"
"$DOCKER" info >/dev/null 2>&1 ||
  die "no Docker engine is running ('$DOCKER info' failed): start the Docker daemon and retry"

for target in "${TARGETS[@]}"; do
  image="$REPO/$target:$TAG"
  echo "images: building $image"
  "$DOCKER" build --target "$target" --build-arg "VERSION=$TAG" -t "$image" "$ROOT"
done
echo "images: built ${TARGETS[*]} as $REPO/<name>:$TAG"
