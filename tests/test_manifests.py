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
    (role,) = by_kind("ClusterRole")
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
