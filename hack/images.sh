#!/usr/bin/env bash
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
