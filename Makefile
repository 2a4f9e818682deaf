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

# Dynamic memory for Kubernetes — build, test, demo, benchmarks.
# `make help` lists the targets. CI runs `make test`.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT    := $(CURDIR)
BIN     := $(ROOT)/bin
RUN_DIR ?= $(ROOT)/.run
export PATH := $(BIN):$(PATH)

GO      ?= go
MODULES := . ./api ./memservice ./updater ./draplugin ./cmd/kubectl-dynamic_memory
# The version stamped into every binary, image and the chart (hack/version.sh,
# docs/releasing.md): vX.Y.Z on a release tag, vX.Y.Z-N-gSHA[-dirty] between tags.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell hack/version.sh)
endif
# The linker flags that stamp it: the targets using them depend on version-check.
LDFLAGS = $(shell hack/version.sh ldflags '$(VERSION)')

# Third-party binaries, each built once from its pinned Go module and cached in bin/.
ETCD           := $(BIN)/etcd
KUBE_APISERVER := $(BIN)/kube-apiserver
KUBE_CM        := $(BIN)/kube-controller-manager
KWOK           := $(BIN)/kwok
# The stock kube-scheduler, for the compatibility mode (make demo SCHEDULER=stock, e2e).
STOCK_SCHEDULER:= $(BIN)/stock-kube-scheduler
CONTROLLER_GEN := $(BIN)/controller-gen
BUF            := $(BIN)/buf
PROTOC_GEN_GO  := $(BIN)/protoc-gen-go
PROTOC_GEN_GRPC:= $(BIN)/protoc-gen-go-grpc
CLIENT_GENS    := $(BIN)/client-gen $(BIN)/lister-gen $(BIN)/informer-gen
HELM           := $(BIN)/helm
CLUSTER_BINS   := $(ETCD) $(KUBE_APISERVER) $(KUBE_CM) $(KWOK) $(STOCK_SCHEDULER)
# What a real node runs (local-cluster up --real-nodes 1): the kubelet, containerd with
# runc, the CNI plugins, the CRI clients, and the binaries of its two local images.
KUBELET        := $(BIN)/kubelet
RUNTIME_BINS   := $(BIN)/containerd $(BIN)/containerd-shim-runc-v2 $(BIN)/ctr $(BIN)/runc $(BIN)/crictl
CNI_BINS       := $(BIN)/cni/bridge $(BIN)/cni/host-local $(BIN)/cni/loopback
IMAGE_BINS     := $(BIN)/pause $(BIN)/memory-probe
NODE_BINS      := $(KUBELET) $(RUNTIME_BINS) $(CNI_BINS) $(IMAGE_BINS)
CODEGEN_BINS   := $(CONTROLLER_GEN) $(BUF) $(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC) $(CLIENT_GENS)

# The project's own binaries, and the package of each.
PROJECT_BINS := kube-scheduler memservice node-agent dra-plugin kubectl-dynamic_memory local-cluster
PKG.kube-scheduler         := ./scheduler
PKG.memservice             := ./memservice/cmd/memservice
PKG.node-agent             := ./updater/cmd/node-agent
PKG.dra-plugin             := ./draplugin/cmd/dra-plugin
PKG.kubectl-dynamic_memory := ./cmd/kubectl-dynamic_memory
PKG.local-cluster          := ./local/cmd/local-cluster

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Build

.PHONY: build
build: $(addprefix $(BIN)/,$(PROJECT_BINS)) $(CLUSTER_BINS) ## Build every binary into bin/ (incremental).

# The project's binaries are always handed to `go build`, which does nothing when the
# build cache says they are current.
.PHONY: $(addprefix $(BIN)/,$(PROJECT_BINS))
# `make bin/<name>` builds one of them too.
.PHONY: $(addprefix bin/,$(PROJECT_BINS))
$(addprefix bin/,$(PROJECT_BINS)): bin/%: $(BIN)/%
$(addprefix $(BIN)/,$(PROJECT_BINS)): $(BIN)/%: version-check
	$(GO) build -ldflags '$(LDFLAGS)' -o $@ $(PKG.$*)

.PHONY: version-check
version-check: ## Check that VERSION is a semantic version, vX.Y.Z[-PRERELEASE][+BUILD].
	@hack/version.sh check '$(VERSION)'

.PHONY: cluster-bins
cluster-bins: $(CLUSTER_BINS) ## Build etcd, kube-apiserver, kube-controller-manager, kwok and the stock kube-scheduler (once).

$(ETCD): tools/etcd/go.mod tools/etcd/main.go
	cd tools/etcd && GOWORK=off $(GO) build -o $@ .
# The API server reports the version of its module, as a release build does: Helm
# checks a chart's kubeVersion against it.
KUBE_VERSION = $(shell $(GO) list -m -f '{{.Version}}' k8s.io/kubernetes)
$(KUBE_APISERVER): go.mod
	$(GO) build -ldflags '-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION)' -o $@ k8s.io/kubernetes/cmd/kube-apiserver
$(KUBE_CM): go.mod
	$(GO) build -o $@ k8s.io/kubernetes/cmd/kube-controller-manager
$(STOCK_SCHEDULER): go.mod
	$(GO) build -o $@ k8s.io/kubernetes/cmd/kube-scheduler
$(KWOK): tools/kwok/go.mod
	cd tools/kwok && GOWORK=off $(GO) build -o $@ sigs.k8s.io/kwok/cmd/kwok
$(KUBELET): go.mod
	$(GO) build -ldflags '-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION)' -o $@ k8s.io/kubernetes/cmd/kubelet
# runc with seccomp (cgo, libseccomp-dev): containerd gives every sandbox the default
# seccomp profile.
$(RUNTIME_BINS) &: tools/node/go.mod
	cd tools/node && GOWORK=off $(GO) build -o $(BIN)/ \
	  github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
	  github.com/containerd/containerd/v2/cmd/ctr sigs.k8s.io/cri-tools/cmd/crictl
	cd tools/node && GOWORK=off $(GO) build -tags seccomp -o $(BIN)/ github.com/opencontainers/runc
	touch $(RUNTIME_BINS)
$(CNI_BINS) &: tools/node/go.mod
	mkdir -p $(BIN)/cni
	cd tools/node && GOWORK=off $(GO) build -o $(BIN)/cni/ github.com/containernetworking/plugins/plugins/main/bridge \
	  github.com/containernetworking/plugins/plugins/ipam/host-local github.com/containernetworking/plugins/plugins/main/loopback
	touch $(CNI_BINS)
# Static: they are the only file of their images.
.PHONY: $(IMAGE_BINS)
$(IMAGE_BINS): $(BIN)/%:
	CGO_ENABLED=0 $(GO) build -o $@ ./local/nodeimage/$*

.PHONY: node-bins
node-bins: $(NODE_BINS) ## Build what a real node runs: kubelet, containerd, runc, CNI plugins, crictl, the pause and test images (once).

$(HELM): tools/helm/go.mod
	cd tools/helm && GOWORK=off $(GO) build -o $@ helm.sh/helm/v4/cmd/helm

.PHONY: helm
helm: $(HELM) ## Build helm (once), for the chart's targets and tests.

$(CODEGEN_BINS) &: tools/codegen/go.mod
	cd tools/codegen && GOWORK=off $(GO) build -o $(BIN)/ \
	  sigs.k8s.io/controller-tools/cmd/controller-gen github.com/bufbuild/buf/cmd/buf \
	  google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc \
	  k8s.io/code-generator/cmd/client-gen k8s.io/code-generator/cmd/lister-gen k8s.io/code-generator/cmd/informer-gen
	touch $(CODEGEN_BINS)

# `go install` of the kubectl plugin from a module proxy directory: the plugin's module
# and the api module it requires, at VERSION (a semantic version, e.g. v0.3.0).
GOPROXY_DIR ?= $(DIST)/goproxy
.PHONY: goproxy
goproxy: ## Write a Go module proxy directory (GOPROXY_DIR) with the kubectl plugin at VERSION, for go install.
	$(GO) run ./hack/goproxy -version $(VERSION) -time $$(git log -1 --format=%cI) -out $(GOPROXY_DIR) \
	  api cmd/kubectl-dynamic_memory

##@ Code generation

CHART     := charts/kube-dynamic-memory
CHART_CRDS:= $(CHART)/templates/crds
# What `make generate` writes: checked by `make verify`.
GENERATED := api $(CHART_CRDS) manifests

.PHONY: generate
generate: $(CODEGEN_BINS) $(HELM) ## Regenerate deepcopy, CRD YAML, the typed CRD clients, gRPC code and manifests/ (the chart's render).
	cd api && $(CONTROLLER_GEN) object:headerFile=../hack/boilerplate.go.txt paths=./v1alpha1/...
	rm -f $(CHART_CRDS)/dynamicmemory.io_*.yaml
	cd api && $(CONTROLLER_GEN) crd paths=./v1alpha1/... output:crd:dir=../$(CHART_CRDS)
	hack/update-codegen.sh
	cd api && $(BUF) generate
	HELM=$(HELM) hack/render-manifests.sh

.PHONY: license-headers
license-headers: ## Add the license notice (hack/boilerplate.go.txt) to every source file and script without it.
	$(GO) run ./hack/licenseheader -fix

.PHONY: verify
verify: generate ## Check that generated code is current, modules tidy, code formatted, vetted and licensed.
	@git diff --exit-code -- $(GENERATED) || { echo "generated files are stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git ls-files --others --exclude-standard -- $(GENERATED))" || { echo "generated files are not committed: $$(git ls-files --others --exclude-standard -- $(GENERATED))"; exit 1; }
	hack/verify-modules.sh $(MODULES) tools/etcd tools/kwok tools/codegen tools/helm tools/node
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed: $$out"; exit 1; }
	$(GO) run ./hack/licenseheader
	for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done

##@ Test

# Packages whose own concurrency is tested under the race detector.
RACE_PKGS := ./api/... ./memservice/... ./updater/... ./draplugin/... ./plugins/...

.PHONY: test
# As root the real node's binaries too (test/realnode skips without root).
test: verify cluster-bins build $(HELM) qemu-root $(if $(filter 0,$(shell id -u)),node-bins) ## Run every test (what CI runs).
	$(GO) test -race -count=1 -timeout 20m $(RACE_PKGS)
	$(GO) test -count=1 -timeout 30m $$($(GO) list ./... | grep -v -e /plugins/) ./cmd/kubectl-dynamic_memory/...
	$(GO) test ./test/perf/schedulerperf/ -count=1 -timeout 15m -run '^$$' -bench BenchmarkPerfScheduling \
	  -benchtime=1x -perf-scheduling-label-filter=integration-test -data-items-dir=$(RUN_DIR)/perf-integration

# QEMU 10 with CXL DCD emulation, from a Debian 13 root, for the qemu backend's real
# test. Prepared only when running as root (debootstrap and chroot need it).
QEMU_ROOT ?= $(ROOT)/.cache/qemu-root
export QEMU_ROOT
.PHONY: qemu-root
qemu-root: ## Prepare a Debian 13 root with QEMU 10 (as root; skipped otherwise).
	hack/qemu-root.sh $(QEMU_ROOT)

##@ Local cluster and demo

.PHONY: cluster-up
cluster-up: cluster-bins $(BIN)/local-cluster ## Start the local cluster (etcd, apiserver, controller-manager, kwok).
	$(BIN)/local-cluster up --dir $(RUN_DIR)

.PHONY: cluster-down
cluster-down: $(BIN)/local-cluster ## Stop the local cluster and everything it started.
	$(BIN)/local-cluster down --dir $(RUN_DIR)

.PHONY: demo
demo: build $(if $(REAL_NODE),node-bins) ## Run the demo scenario on the local cluster (KEEP=1 leaves it running; SCHEDULER=stock: the stock kube-scheduler; REAL_NODE=1 adds a real kubelet node, as root).
	$(BIN)/local-cluster demo --dir $(RUN_DIR) $(if $(KEEP),--keep) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(if $(REAL_NODE),--real-nodes 1)

# The full suite (100 runs) writes docs/reliability.md; shorter ones, e.g. one seed
# run again (SEED=7 RUNS=1), write their report in the run directory.
SEED ?= 1
RUNS ?= 100
CHAOS_REPORT ?= $(if $(filter 100,$(RUNS)),docs/reliability.md,$(RUN_DIR)/chaos/reliability.md)
.PHONY: chaos
chaos: cluster-bins build ## Run the chaos suite (SEED=1 RUNS=100; the full suite writes docs/reliability.md).
	$(BIN)/local-cluster chaos --dir $(RUN_DIR)/chaos --seed $(SEED) --runs $(RUNS) --report $(CHAOS_REPORT)

##@ Benchmarks and images

.PHONY: bench
bench: cluster-bins build ## Run the benchmarks and regenerate docs/benchmarks.md.
	hack/bench.sh

IMAGE_REPO ?= ghcr.io/dynamicmemory
# The chart's version is VERSION without a leading v (SemVer, as Helm requires); its
# appVersion, the images' default tag, is VERSION as `make images` tags them.
CHART_VERSION = $(patsubst v%,%,$(VERSION))
.PHONY: chart
chart: $(HELM) ## Package the Helm chart as dist/kube-dynamic-memory-<VERSION>.tgz (VERSION=X.Y.Z).
	@[[ "$(CHART_VERSION)" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$$ ]] || { echo "make chart: VERSION=$(VERSION) is not a release version: give VERSION=X.Y.Z (SemVer, an optional leading v)"; exit 1; }
	$(HELM) lint --strict $(CHART)
	$(HELM) package $(CHART) --version $(CHART_VERSION) --app-version $(VERSION) --destination $(DIST)

.PHONY: images
images: version-check ## Build container images tagged VERSION (needs a Docker engine; PUSH=1: multi-arch, pushed).
	hack/images.sh $(IMAGE_REPO) $(VERSION)

.PHONY: kind-demo
kind-demo: ## Run the demo scenario on a kind cluster (needs Docker and kind; CLEANUP=1 deletes it).
	kind/demo.sh

.PHONY: clean
clean: ## Remove build output, dist/ and run directories (keeps cached third-party binaries).
	rm -rf $(RUN_DIR) $(DIST) $(addprefix $(BIN)/,$(PROJECT_BINS))

##@ Release

DIST ?= $(ROOT)/dist
RELEASE_PLATFORMS := linux/amd64 linux/arm64
RELEASE_BINS      := memservice kube-scheduler node-agent dra-plugin kubectl-dynamic_memory
KUBECTL_PLUGIN    := kubectl-dynamic_memory
# Archive entries carry the time of the release commit, so the same commit gives the same archives.
ifeq ($(origin SOURCE_DATE_EPOCH),undefined)
SOURCE_DATE_EPOCH := $(shell git log -1 --format=%ct)
endif

# release-binary NAME OS ARCH: dist/NAME-OS-ARCH, static and without local paths.
define release-binary
CGO_ENABLED=0 GOOS=$(2) GOARCH=$(3) $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(DIST)/$(1)-$(2)-$(3) $(PKG.$(1))

endef
# release-plugin-archive OS ARCH: dist/kubectl-dynamic_memory-OS-ARCH.tar.gz, the plugin
# and the license, as krew installs it.
define release-plugin-archive
stage=$$(mktemp -d) && install -m 0755 $(DIST)/$(KUBECTL_PLUGIN)-$(1)-$(2) $$stage/$(KUBECTL_PLUGIN) && install -m 0644 LICENSE $$stage/ && \
  tar -C $$stage --sort=name --owner=0 --group=0 --numeric-owner --mtime=@$(SOURCE_DATE_EPOCH) -cf - $(KUBECTL_PLUGIN) LICENSE | \
  gzip -n >$(DIST)/$(KUBECTL_PLUGIN)-$(1)-$(2).tar.gz && rm -rf $$stage

endef
platform-os   = $(word 1,$(subst /, ,$(1)))
platform-arch = $(word 2,$(subst /, ,$(1)))

.PHONY: release
release: version-check ## Build the release into dist/: binaries, kubectl plugin archives, krew manifest, chart, checksums.txt.
	@case '$(VERSION)' in *-dirty) echo "release: VERSION $(VERSION): the checkout has uncommitted changes; commit them or set VERSION" >&2; exit 1;; esac
	rm -rf $(DIST) && mkdir -p $(DIST)
	$(foreach p,$(RELEASE_PLATFORMS),$(foreach b,$(RELEASE_BINS),$(call release-binary,$(b),$(call platform-os,$(p)),$(call platform-arch,$(p)))))
	$(foreach p,$(RELEASE_PLATFORMS),$(call release-plugin-archive,$(call platform-os,$(p)),$(call platform-arch,$(p))))
	$(GO) run ./hack/krewmanifest -version $(VERSION) -o $(DIST)/dynamic-memory.yaml $(DIST)/$(KUBECTL_PLUGIN)-*.tar.gz
	$(MAKE) chart VERSION=$(VERSION) DIST=$(DIST)
	cd $(DIST) && sha256sum $$(find . -maxdepth 1 -type f -printf '%P\n' | sort) >checksums.txt
	$(MAKE) goproxy VERSION=$(VERSION) GOPROXY_DIR=$(DIST)/goproxy
	@echo "release: $(VERSION) in $(DIST); publishing it: docs/releasing.md"
