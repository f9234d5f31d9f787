#!/usr/bin/env bash
# The built-in demo: build the cilium-agent look-alike, run it, ask ctrace for
# the bpftrace command, and run that command for a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-build
mkdir -p "$out"
export GOCACHE="${GOCACHE:-$PWD/$out/gocache}" GOFLAGS=-mod=mod CGO_ENABLED=0
(cd demo/cilium-agent && go build -o "../../$out/cilium-agent" .)

"$out/cilium-agent" 2>/dev/null &
agent=$!
trap 'kill $agent 2>/dev/null || true' EXIT
sleep 0.5

echo "\$ ctrace target cilium-agent --func regenerate"
.venv/bin/ctrace target cilium-agent --func regenerate
line=$(.venv/bin/ctrace target cilium-agent --func regenerate -o json |
    .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["targets"][0]["probes"][0]["shell"])')
echo
echo "\$ timeout -s INT 4 $line"
# bpftrace 0.17 warns about RLIMIT_MEMLOCK where it may not raise it; the probe works regardless.
eval "timeout -s INT 4 $line" 2> >(grep -v RLIMIT_MEMLOCK >&2) | head -40 || true
