#!/usr/bin/env bash
# The built-in demo: build the cilium-agent look-alike into an image FROM scratch,
# run it as container `cilium-agent` (the tracing-basics post, 2.5), ask ctrace for the bpftrace
# command, and run that command for a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-build
image=ctrace/cilium-agent:dev
mkdir -p "$out"
export GOCACHE="${GOCACHE:-$PWD/$out/gocache}" GOFLAGS=-mod=mod CGO_ENABLED=0
(cd demo/cilium-agent && go build -o "../../$out/cilium-agent" .)

docker build -q -t "$image" -f demo/cilium-agent/Dockerfile "$out" >/dev/null
docker rm -f cilium-agent >/dev/null 2>&1 || true
docker run -d --name cilium-agent "$image" >/dev/null
trap 'docker rm -f cilium-agent >/dev/null 2>&1 || true' EXIT
sleep 0.5

echo "\$ ctrace target cilium-agent --runtime docker --func regenerate"
.venv/bin/ctrace target cilium-agent --runtime docker --func regenerate
# The process name matches too: pick the container's process for the run below.
line=$(.venv/bin/ctrace target cilium-agent --runtime docker --func regenerate -o json | .venv/bin/python -c '
import json, sys
ts = json.load(sys.stdin)["targets"]
t = next(t for t in ts if (t["container"] or {}).get("name") == "cilium-agent")
print(t["probes"][0]["shell"])')
echo
echo "\$ timeout -s INT 4 $line"
# bpftrace 0.17 warns about RLIMIT_MEMLOCK where it may not raise it; the probe works regardless.
eval "timeout -s INT 4 $line" 2> >(grep -v RLIMIT_MEMLOCK >&2) | head -40 || true
