# syntax=docker/dockerfile:1
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

# One multi-stage build for the project's four in-cluster binaries; pick one with
# --target (hack/images.sh builds them all, stamped with the version of the checkout):
#   docker build --target memservice --build-arg VERSION=v0.1.0 -t ghcr.io/dynamicmemory/memservice:v0.1.0 .
# Targets: memservice, kube-scheduler, node-agent, dra-plugin.

ARG GO_VERSION=1.26
# The version stamped into the binaries and the labels (hack/version.sh), and the commit.
ARG VERSION=v0.0.0-dev
ARG REVISION=unknown

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION
WORKDIR /src
# Module files first, so that dependencies are cached across source changes.
COPY go.work go.work.sum go.mod go.sum ./
COPY api/go.mod api/go.sum api/
COPY memservice/go.mod memservice/go.sum memservice/
COPY updater/go.mod updater/go.sum updater/
COPY draplugin/go.mod draplugin/go.sum draplugin/
COPY cmd/kubectl-dynamic_memory/go.mod cmd/kubectl-dynamic_memory/go.sum cmd/kubectl-dynamic_memory/
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    ldflags=$(hack/version.sh ldflags "$VERSION") \
 && CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w $ldflags" \
      -o /out/ ./scheduler ./memservice/cmd/memservice ./updater/cmd/node-agent ./draplugin/cmd/dra-plugin \
 && mv /out/scheduler /out/kube-scheduler

# Every image: distroless, with the OCI labels of its version.
FROM gcr.io/distroless/static-debian12 AS base
ARG VERSION
ARG REVISION
LABEL org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.source="https://github.com/dynamicmemory/kube-dynamic-memory" \
      org.opencontainers.image.url="https://github.com/dynamicmemory/kube-dynamic-memory" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="The kube-dynamic-memory Authors"

# The control-plane components run as an unprivileged user (distroless's nonroot).
FROM base AS memservice
LABEL org.opencontainers.image.title="memservice" \
      org.opencontainers.image.description="kube-dynamic-memory memory service: owns the CXL memory pools"
COPY --from=build /out/memservice /memservice
USER 65532:65532
ENTRYPOINT ["/memservice"]

FROM base AS kube-scheduler
LABEL org.opencontainers.image.title="kube-scheduler" \
      org.opencontainers.image.description="kube-scheduler with the DynamicMemory plugin of kube-dynamic-memory"
COPY --from=build /out/kube-scheduler /kube-scheduler
USER 65532:65532
ENTRYPOINT ["/kube-scheduler"]

# The node components need root: memory hot-plug in /sys, cgroups, kubelet plugin dirs.
FROM base AS node-agent
LABEL org.opencontainers.image.title="node-agent" \
      org.opencontainers.image.description="kube-dynamic-memory node agent: onlines and offlines CXL memory on its node"
COPY --from=build /out/node-agent /node-agent
ENTRYPOINT ["/node-agent"]

FROM base AS dra-plugin
LABEL org.opencontainers.image.title="dra-plugin" \
      org.opencontainers.image.description="kube-dynamic-memory DRA kubelet plugin for driver dcd.dynamicmemory.io"
COPY --from=build /out/dra-plugin /dra-plugin
ENTRYPOINT ["/dra-plugin"]
