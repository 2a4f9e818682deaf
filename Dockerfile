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
# --target (hack/images.sh builds them all):
#   docker build --target memservice -t ghcr.io/dynamicmemory/memservice:dev .
# Targets: memservice, kube-scheduler, node-agent, dra-plugin.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Module files first, so that dependencies are cached across source changes.
COPY go.work go.work.sum go.mod go.sum ./
COPY api/go.mod api/go.sum api/
COPY memservice/go.mod memservice/go.sum memservice/
COPY updater/go.mod updater/go.sum updater/
COPY draplugin/go.mod draplugin/go.sum draplugin/
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2-dynamicmemory-${VERSION} -X github.com/dynamicmemory/kube-dynamic-memory/api/version.Version=${VERSION}" \
      -o /out/ ./scheduler ./memservice/cmd/memservice ./updater/cmd/node-agent ./draplugin/cmd/dra-plugin \
 && mv /out/scheduler /out/kube-scheduler

# The control-plane components run as an unprivileged user.
FROM gcr.io/distroless/static-debian12:nonroot AS memservice
COPY --from=build /out/memservice /memservice
ENTRYPOINT ["/memservice"]

FROM gcr.io/distroless/static-debian12:nonroot AS kube-scheduler
COPY --from=build /out/kube-scheduler /kube-scheduler
ENTRYPOINT ["/kube-scheduler"]

# The node components need root: memory hot-plug in /sys, cgroups, kubelet plugin dirs.
FROM gcr.io/distroless/static-debian12 AS node-agent
COPY --from=build /out/node-agent /node-agent
ENTRYPOINT ["/node-agent"]

FROM gcr.io/distroless/static-debian12 AS dra-plugin
COPY --from=build /out/dra-plugin /dra-plugin
ENTRYPOINT ["/dra-plugin"]
