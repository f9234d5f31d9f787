"""The suite `make kind-test` runs on a real kind cluster (hack/kind-test.sh sets it up).

kind nodes are docker containers on this host, so every pod's process is on this
host's /proc, three PID namespaces deep (host, node, pod).
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from tests.conftest import ctrace, fire, need_bpftrace

CONTEXT = os.environ.get("CTRACE_KIND_CONTEXT", "")
REGEN = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"

pytestmark = [
    pytest.mark.kind,
    pytest.mark.skipif(not CONTEXT, reason="no kind cluster: run `make kind-test` where kind and docker exist"),
]


def k(*args: str) -> Any:
    res = ctrace(*args, "--context", CONTEXT, "-o", "json")
    assert res.code == 0, res.err
    return res.json()


def test_daemonset_replicas_on_every_node_fire() -> None:
    need_bpftrace()
    data = k("target", "ds/cilium", "-n", "kube-system", "--func", "regenerate")
    nodes = {t["pod"]["node"] for t in data["targets"]}
    assert len(nodes) == 3  # one control plane and two workers
    for t in data["targets"]:
        assert len(t["nspid"]) == 3  # host -> kind node -> pod
        result = fire(t["probes"][0]["argv"], REGEN)
        assert result.fired, result.stderr


def test_node_agent_runs_ctrace_and_bpftrace() -> None:
    pods = k("target", "-l", "k8s-app=cilium", "-n", "kube-system", "--func", "regenerate")["targets"]
    target = pods[0]["pod"]
    agents = subprocess.run(
        ["kubectl", "--context", CONTEXT, "get", "pods", "-n", "ctrace-system", "-o", "name",
         "--field-selector", f"spec.nodeName={target['node']}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    agent = agents[0].split("/", 1)[1]
    out = subprocess.run(
        ["kubectl", "--context", CONTEXT, "exec", "-n", "ctrace-system", agent, "--",
         "ctrace", "target", f"pod/{target['name']}", "-n", "kube-system", "--func", "regenerate",
         "--run", "--duration", "3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"{REGEN}+0" in out.stdout
