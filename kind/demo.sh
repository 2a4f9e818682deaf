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

# Dynamic memory on a kind cluster: the same scenario as `make demo`, on real kubelets.
#
#   kind/demo.sh            create (or reuse) the kind cluster "dynamic-memory", build and
#                           load the images, install, run the scenario, leave it running
#   CLEANUP=1 kind/demo.sh  delete the kind cluster at the end
#
# Needs docker (a running engine), kind, kubectl and go on PATH (helm is built into bin/). Without Docker use the
# local cluster instead: make demo.
# Environment: KIND_NODE_IMAGE (node image for `kind create cluster --image`), DOCKER,
# KIND, KUBECTL (alternative commands), TIMEOUT (seconds per wait, default 180).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=dynamic-memory
NAMESPACE=dynamic-memory-system
NODE_NAMESPACE=dynamic-memory-node
DEMO_NS=dynamic-memory-demo
REPO=ghcr.io/dynamicmemory
TAG=dev
IMAGES=(memservice kube-scheduler node-agent dra-plugin)
DOCKER=${DOCKER:-docker}
KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
TIMEOUT=${TIMEOUT:-180}

step() { printf '\n==> %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

# Fail fast, with the reason, before touching anything.
for tool in "$DOCKER" "$KIND" "$KUBECTL" go; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "'$tool' not found: the kind demo needs docker, kind, kubectl and go on PATH. Without Docker, run the local cluster demo: make demo"
done
"$DOCKER" info >/dev/null 2>&1 ||
  die "no Docker engine is running ('$DOCKER info' failed): start the Docker daemon and retry, or run the local cluster demo: make demo"

KUBECONFIG_FILE=$(mktemp)
CERTS=$(mktemp -d)
trap 'rm -rf "$KUBECONFIG_FILE" "$CERTS"' EXIT
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
dm() { PATH="$ROOT/bin:$PATH" "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" dynamic-memory "$@"; }

step "kind cluster $CLUSTER"
if "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "reusing the existing cluster"
else
  "$KIND" create cluster --config "$ROOT/kind/cluster.yaml" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi
"$KIND" get kubeconfig --name "$CLUSTER" >"$KUBECONFIG_FILE"
mapfile -t NODES < <(k get nodes -l '!node-role.kubernetes.io/control-plane' -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
[ "${#NODES[@]}" -gt 0 ] || die "the cluster has no worker nodes"

step "images ($REPO/<name>:$TAG)"
"$ROOT/hack/images.sh" "$REPO" "$(cd "$ROOT" && hack/version.sh)" "$TAG"
for image in "${IMAGES[@]}"; do
  "$KIND" load docker-image --name "$CLUSTER" "$REPO/$image:$TAG"
done

step "binaries: memservice (for certificates), the kubectl plugin and helm"
(cd "$ROOT" && go build -o bin/memservice ./memservice/cmd/memservice &&
  go build -o bin/kubectl-dynamic_memory ./cmd/kubectl-dynamic_memory && make --no-print-directory helm)

step "the memory service's CA (it signs the components' PodCertificateRequests)"
# The components' identities come from PodCertificateRequests the memory service signs
# with this CA; only the memory service mounts it (of what certs writes, only ca.crt and
# ca.key are used).
"$ROOT/bin/memservice" certs --dir "$CERTS"

step "install (helm upgrade --install, the chart with kind/values.yaml)"
"$ROOT/bin/helm" upgrade --install kube-dynamic-memory "$ROOT/charts/kube-dynamic-memory" \
  --kubeconfig "$KUBECONFIG_FILE" --namespace kube-system -f "$ROOT/kind/values.yaml" \
  --set-file identity.podCertificate.caCert="$CERTS/ca.crt" --set-file identity.podCertificate.caKey="$CERTS/ca.key"
# Only the leader of the memory service is ready (the standby stays 0/1 by design).
k -n "$NAMESPACE" wait deployment/memservice --for=jsonpath='{.status.readyReplicas}'=1 --timeout "${TIMEOUT}s"
k -n "$NODE_NAMESPACE" rollout status daemonset/node-agent --timeout "${TIMEOUT}s"
k -n "$NODE_NAMESPACE" rollout status daemonset/dra-plugin --timeout "${TIMEOUT}s"
k -n "$NAMESPACE" rollout status deployment/dynamic-memory-scheduler --timeout "${TIMEOUT}s"

step "hand scheduling over to the dynamic memory scheduler"
# One scheduler must allocate every DRA claim: stop kind's kube-scheduler (a static
# pod); ours takes over its Lease.
"$DOCKER" exec "$CLUSTER-control-plane" sh -c \
  'test ! -f /etc/kubernetes/manifests/kube-scheduler.yaml || mv /etc/kubernetes/manifests/kube-scheduler.yaml /etc/kubernetes/kube-scheduler.yaml.disabled'
deadline=$((SECONDS + TIMEOUT))
until k -n kube-system get lease kube-scheduler -o jsonpath='{.spec.holderIdentity}' 2>/dev/null | grep -q dynamic-memory-scheduler; do
  [ $SECONDS -lt $deadline ] || die "the dynamic memory scheduler did not take the kube-scheduler Lease in ${TIMEOUT}s: kubectl -n $NAMESPACE logs deploy/dynamic-memory-scheduler"
  sleep 2
done
echo "leader: $(k -n kube-system get lease kube-scheduler -o jsonpath='{.spec.holderIdentity}')"

step "scenario: a pool and four pods (4Gi, 16Gi, 16Gi, and 200Gi that cannot fit)"
k apply --server-side -k "$ROOT/manifests/samples"
k -n "$DEMO_NS" wait --for=condition=Ready pod/small pod/medium pod/medium-2 --timeout "${TIMEOUT}s"
k -n "$DEMO_NS" wait --for=jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}'=Unschedulable pod/too-big --timeout "${TIMEOUT}s"
dm get claims -n "$DEMO_NS"
echo
dm get pools
echo
dm top nodes
echo
dm why too-big -n "$DEMO_NS"
echo
k -n "$DEMO_NS" logs small

step "pods deleted: memory goes back to the pool"
k -n "$DEMO_NS" delete pod --all --wait=true --timeout "${TIMEOUT}s"
deadline=$((SECONDS + TIMEOUT))
while [ -n "$(k get dynamicmemoryclaims -A -o name 2>/dev/null)" ]; do
  [ $SECONDS -lt $deadline ] || die "DynamicMemoryClaims remain after ${TIMEOUT}s: kubectl dynamic-memory get claims -A"
  sleep 2
done
dm get pools

if [ "${CLEANUP:-0}" = 1 ]; then
  step "deleting the kind cluster"
  "$KIND" delete cluster --name "$CLUSTER"
else
  echo
  echo "The cluster keeps running: kind get kubeconfig --name $CLUSTER > kubeconfig; KUBECONFIG=kubeconfig kubectl dynamic-memory get pools"
  echo "Delete it with: kind delete cluster --name $CLUSTER"
fi
