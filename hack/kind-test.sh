#!/usr/bin/env bash
# `make kind-test`: a kind cluster (kind-config.yaml), the demo and node agent images loaded
# without a registry, the manifests applied, the tests marked `kind` run, the cluster deleted.
# Where kind or its node image (kindest/node, from a registry) is missing, the same suite runs on
# this machine's local cluster instead (hack/cluster.sh: Kubernetes 1.20 built from Debian's
# source, nodes as kind makes them); tests/test_kind.py sets that one up itself.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/dockerd.sh
if ! command -v kind >/dev/null || [ -z "$(docker images -q kindest/node 2>/dev/null)" ]; then
    echo "make kind-test: no kind or no kindest/node image here: the kind suite runs on hack/cluster.sh's cluster"
    exec .venv/bin/python -m pytest -m kind tests/test_kind.py
fi
cluster=${KIND_CLUSTER:-ctrace-test}
context="kind-$cluster"
build=$(mktemp -d)
kind create cluster --name "$cluster" --config kind-config.yaml --wait 180s
trap 'kind delete cluster --name "$cluster"; rm -rf "$build"' EXIT

(cd demo/cilium-agent && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -o "$build/cilium-agent" .)
cp demo/cilium-agent/Dockerfile "$build/"
docker build -q -t ctrace/cilium-agent:dev "$build"
docker build -q -t ctrace/agent:dev -f manifests/agent/Dockerfile .
kind load docker-image --name "$cluster" ctrace/cilium-agent:dev ctrace/agent:dev

kubectl --context "$context" apply -f manifests/namespace.yaml -f manifests/rbac.yaml \
    -f manifests/agent.yaml -f manifests/demo-cilium.yaml
kubectl --context "$context" -n ctrace-system rollout status ds/ctrace-agent --timeout=180s
kubectl --context "$context" -n kube-system rollout status ds/cilium --timeout=180s

CTRACE_KIND_CONTEXT="$context" .venv/bin/python -m pytest -m kind tests/test_kind.py
