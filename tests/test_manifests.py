"""manifests/ and kind-config.yaml: valid against a current Kubernetes schema, and what tracing needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, need

MANIFESTS = sorted((ROOT / "manifests").glob("*.yaml"))


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for p in MANIFESTS for d in docs(p) if d["kind"] == kind]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_valid_against_current_schema(path: Path) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        need(False, "kubernetes-validate is not installed (a dev dependency: make test installs it)")
    version = kubernetes_validate.latest_version()
    for doc in docs(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_rbac_reads_pods_and_nothing_more() -> None:
    (role,) = [r for r in by_kind("ClusterRole") if r["metadata"]["name"] == "ctrace-agent"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]


def test_agent_has_what_tracing_needs() -> None:
    agent = next(d for d in by_kind("DaemonSet") if d["metadata"]["name"] == "ctrace-agent")
    spec = agent["spec"]["template"]["spec"]
    assert spec["hostPID"] is True
    (container,) = spec["containers"]
    assert container["securityContext"]["privileged"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/sys/kernel/debug", "/sys/kernel/tracing"} <= mounts
    assert agent["metadata"]["namespace"] == "ctrace-system"
    assert (ROOT / "manifests/agent/Dockerfile").exists()


def test_demo_workload_uses_the_local_image() -> None:
    demo = next(d for d in by_kind("DaemonSet") if d["metadata"]["name"] == "cilium")
    (container,) = demo["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "cilium-agent" and container["imagePullPolicy"] == "Never"


def test_kind_config_mounts_tracing_on_every_node() -> None:
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    roles = [n["role"] for n in cfg["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    for node in cfg["nodes"]:
        assert {m["containerPath"] for m in node["extraMounts"]} == {"/sys/kernel/debug", "/sys/kernel/tracing"}


def test_krew_manifest_names_the_plugin_binary() -> None:
    (plugin,) = docs(ROOT / "manifests/krew/ctrace.yaml")
    assert plugin["kind"] == "Plugin" and plugin["metadata"]["name"] == "ctrace"
    (platform,) = plugin["spec"]["platforms"]
    assert platform["bin"] == "kubectl-ctrace"


def test_agent_runs_the_agent_server_on_its_port() -> None:
    from ctrace.agent.protocol import PORT

    agent = next(d for d in by_kind("DaemonSet") if d["metadata"]["name"] == "ctrace-agent")
    spec = agent["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["command"] == ["ctrace", "agent"]  # PROTOCOL.md's requests, not a shell to exec into
    assert spec.get("hostNetwork") is not True  # its loopback is the pod's own: nothing on the node reaches it
    assert container["ports"] == [{"name": "ctrace-agent", "containerPort": PORT, "protocol": "TCP"}]
    # The kubelet dials a tcpSocket probe on the pod's IP; the agent listens on loopback only.
    assert container["readinessProbe"]["exec"]["command"] == ["ctrace", "agent", "--check"]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "CTRACE_AGENT_ALLOW_PROGRAMS" not in env  # users' own programs: off unless an operator says so
    text = (ROOT / "manifests/agent.yaml").read_text()
    assert "# - name: CTRACE_AGENT_ALLOW_PROGRAMS" in text


def test_agent_check_is_its_readiness(tmp_path: Path) -> None:
    """``ctrace agent --check`` (the readiness probe) passes on a live agent of this version, fails without one."""
    import socket
    import subprocess
    import sys
    import time

    from tests.conftest import ctrace

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listen = f"--listen=127.0.0.1:{port}"
    res = ctrace("agent", "--check", listen)
    assert res.code == 3 and "no agent answers" in res.err.splitlines()[0]
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", "ctrace", "agent", listen], cwd=ROOT, stderr=out)
    try:
        for _ in range(100):
            if "listening on" in log.read_text():
                break
            time.sleep(0.1)
        res = ctrace("agent", "--check", listen)
        assert res.code == 0 and res.err == "", res.err
    finally:
        agent.terminate()
        assert agent.wait(timeout=30) == 0
