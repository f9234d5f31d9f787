"""The Kubernetes path against a real API server and real kubelets: the session's local cluster
(hack/cluster.sh, Kubernetes 1.20), with a namespace of this session's own (tests/cluster.py's
WORKLOADS: a DaemonSet with a replica on each node, a Deployment, a StatefulSet, a pod of two
containers). Its nodes are docker containers on this host, so from here every pod's process is a
local PID three namespaces deep, and the printed bpftrace commands are run here.

The fake API server (tests/k8s_api.py) stays only for what a real server will not do on demand:
a request that never answers, and a 500.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster import Cluster, Kube
from tests.conftest import Bpftrace, Result, ctrace, fire, need, need_bpftrace
from tests.k8s_api import ApiServer, pod

pytestmark = pytest.mark.cluster

REGEN = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"


def k(cluster: Cluster, *args: str, config: Path | None = None) -> Result:
    return ctrace(*args, "--kubeconfig", str(config or cluster.kubeconfig), env={**os.environ, "KUBECONFIG": ""})


def targets_of(res: Result) -> list[dict[str, Any]]:
    assert res.code == 0, res.err
    found: list[dict[str, Any]] = res.json()["targets"]
    return found


def pods(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return items


def cid(p: dict[str, Any], container: str = "cilium-agent") -> str:
    (status,) = [s for s in p["status"]["containerStatuses"] if s["name"] == container]
    runtime, _, found = status["containerID"].partition("://")
    assert runtime == "containerd"
    return found


def fires_only_in(argv: list[str], pid: int, bt: Bpftrace) -> None:
    """The printed line runs ``bt`` and fires in the pod's process only: the other node's
    replica runs the same image, and a program not bound to its target would count it too."""
    assert argv[0] == bt.path, argv
    result = fire(argv, REGEN, want=2)
    assert result.fired, (bt.version, result.stderr)
    assert result.pids == {pid} and not result.warnings, (bt.version, result.pids, result.warnings)


def test_pod_to_firing_command(cluster: Cluster, k8s_namespace: str, bpftraces: list[Bpftrace]) -> None:
    ns = k8s_namespace
    p = sorted(pods(cluster, ns, "k8s-app=cilium"), key=lambda p: p["spec"]["nodeName"])[0]
    name = p["metadata"]["name"]
    (t,) = targets_of(k(cluster, "target", f"pod/{name}", "-n", ns, "--func", "regenerate", "-o", "json"))
    assert t["runtime"] == "k8s"
    assert t["pod"] == {
        "namespace": ns,
        "name": name,
        "uid": p["metadata"]["uid"],
        "container": "cilium-agent",
        "node": p["spec"]["nodeName"],
        "agent": None,
    }
    assert t["container"]["id"] == cid(p)
    # host -> node -> pod: the node is a container of its own PID namespace, as on kind
    assert len(t["nspid"]) == 3 and t["nspid"][-1] == 1 and t["pid"] == t["nspid"][0]
    assert Path(f"/proc/{t['pid']}/comm").read_text().strip() == "cilium-agent"
    assert t["binary"]["path"] == "/usr/bin/cilium-agent"
    for bt in bpftraces:
        args = ("target", f"pod/{name}", "-n", ns, "--func", "regenerate", "-o", "json", *bt.args)
        (t,) = targets_of(k(cluster, *args))
        (probe,) = t["probes"]
        for cmd in [probe, *probe["alternatives"]]:
            fires_only_in(cmd["argv"], t["pid"], bt)


def test_daemonset_gives_a_command_per_replica(cluster: Cluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    data = k(cluster, "target", "ds/cilium", "-n", ns, "--func", "regenerate", "-o", "json").json()
    live = pods(cluster, ns, "k8s-app=cilium")
    assert sorted(t["pod"]["name"] for t in data["targets"]) == sorted(p["metadata"]["name"] for p in live)
    assert {t["pod"]["node"] for t in data["targets"]} == {"ctrace-worker1", "ctrace-worker2"}
    assert {t["container"]["id"] for t in data["targets"]} == {cid(p) for p in live}
    # Every node shares this host's kernel: both replicas are local PIDs here, none is remote.
    assert data["remote"] == [] and len({t["pid"] for t in data["targets"]}) == 2


def test_deployment_statefulset_and_selectors(cluster: Cluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    for args, selector in (
        (["deploy/cilium-operator"], "app=operator"),
        (["sts/db"], "app=db"),
        (["-l", "k8s-app=cilium"], "k8s-app=cilium"),
    ):
        res = k(cluster, "target", *args, "-n", ns, "--func", "regenerate", "-o", "json")
        names = sorted(t["pod"]["name"] for t in targets_of(res))
        assert names == sorted(p["metadata"]["name"] for p in pods(cluster, ns, selector)), args
    # -A: every namespace's pods with the label, as the server lists them
    everywhere = cluster.json("get", "pods", "-A", "-l", "k8s-app=cilium")["items"]
    res = k(cluster, "target", "-l", "k8s-app=cilium", "-A", "--func", "regenerate", "-o", "json")
    found = sorted((t["pod"]["namespace"], t["pod"]["name"]) for t in targets_of(res))
    assert found == sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in everywhere)
    assert ns in {n for n, _ in found}


def test_default_container_and_dash_c(cluster: Cluster, k8s_namespace: str) -> None:
    ns = k8s_namespace
    (t,) = targets_of(k(cluster, "target", "pod/two-containers", "-n", ns, "--func", "regenerate", "-o", "json"))
    assert t["pod"]["container"] == "cilium-agent"
    args = ("target", "pod/two-containers", "-n", ns, "-c", "sidecar", "--func", "regenerate", "-o", "json")
    (side,) = targets_of(k(cluster, *args))
    live = cluster.json("get", "pod", "two-containers", "-n", ns)
    assert side["pod"]["container"] == "sidecar" and side["container"]["id"] == cid(live, "sidecar")
    assert side["pid"] != t["pid"]
    res = k(cluster, "target", "pod/two-containers", "-n", ns, "-c", "nope", "--func", "regenerate")
    assert res.code == 2 and "choose one of: cilium-agent, sidecar" in res.err


def test_namespace_comes_from_the_context(cluster: Cluster, k8s_namespace: str, tmp_path: Path) -> None:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    (ctx,) = config["contexts"]
    other = {"name": "other", "context": {**ctx["context"], "namespace": k8s_namespace}}
    config["contexts"].append(other)
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    res = k(cluster, "target", "pod/two-containers", "--context", "other", "--func", "regenerate", "-o", "json",
            config=path)  # fmt: skip
    assert [t["pod"]["namespace"] for t in targets_of(res)] == [k8s_namespace]
    res = k(cluster, "target", "pod/two-containers", "--func", "regenerate", config=path)
    assert res.code == 1 and "not found" in res.err and "default" in res.err


def one_line(res: Result, code: int, words: str) -> None:
    assert res.code == code, res
    lines = res.err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("ctrace: error: ") and lines[1].startswith("hint: "), res.err
    assert words in lines[0], lines[0]


def test_api_errors_of_a_real_server_are_one_line(cluster: Cluster, k8s_namespace: str, tmp_path: Path) -> None:
    target = ("target", "pod/two-containers", "-n", k8s_namespace, "--func", "regenerate")
    # 403: ctrace-user has a valid token and no role (RBAC)
    one_line(k(cluster, *target, config=cluster.user_kubeconfig), 3, "403 Forbidden")
    # 401: a token the server does not know
    config = yaml.safe_load(cluster.user_kubeconfig.read_text())
    config["users"][0]["user"]["token"] = uuid.uuid4().hex
    bad = tmp_path / "bad"
    bad.write_text(yaml.safe_dump(config))
    one_line(k(cluster, *target, config=bad), 3, "401 Unauthorized")
    # 404
    one_line(k(cluster, "target", "pod/nothing-here", "-n", k8s_namespace, "--func", "x"), 1, "not found")


@pytest.mark.parametrize(("answer", "code", "words"), [("timeout", 3, "did not answer within 1s"), (500, 3, "500")])
def test_what_only_the_fake_server_does(tmp_path: Path, answer: int | str, code: int, words: str) -> None:
    """The fake API server (tests/k8s_api.py), for what a real one will not do on demand:
    never answer, or fail with a 500."""
    server = ApiServer()
    server.pods = [pod("cilium-x7k2p", "kube-system", "containerd://" + "ab" * 32, "node-a")]
    server.answer = answer
    try:
        config = server.kubeconfig(tmp_path / "config", namespace="kube-system")
        res = ctrace("target", "pod/cilium-x7k2p", "--func", "regenerate", "--request-timeout", "1",
                     "--kubeconfig", str(config), env={**os.environ, "KUBECONFIG": ""})  # fmt: skip
    finally:
        server.stop()
    one_line(res, code, words)


def test_missing_kubeconfig(tmp_path: Path) -> None:
    res = ctrace("target", "pod/x", "--func", "f", "--kubeconfig", str(tmp_path / "nope"))
    assert res.code == 3 and "kubeconfig" in res.err and "Traceback" not in res.err


def test_real_kubectl_finds_and_runs_the_plugin(
    cluster: Cluster, k8s_namespace: str, bpftraces: list[Bpftrace]
) -> None:
    need(shutil.which("kubectl") is not None, "kubectl is not installed (make test installs it)")
    bindir = Path(sys.executable).parent
    need((bindir / "kubectl-ctrace").exists(), "kubectl-ctrace is not installed in the venv")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "KUBECONFIG": str(cluster.kubeconfig)}
    listed = subprocess.run(["kubectl", "plugin", "list"], capture_output=True, text=True, env=env)
    assert str(bindir / "kubectl-ctrace") in listed.stdout
    helped = subprocess.run(["kubectl", "ctrace", "--help"], capture_output=True, text=True, env=env)
    assert helped.stdout.startswith("usage: kubectl ctrace ")
    # Under kubectl a bare NAME is a pod, as with `kubectl logs NAME`; --bpftrace passes through.
    name = pods(cluster, k8s_namespace, "k8s-app=cilium")[0]["metadata"]["name"]
    for bt in bpftraces:
        out = subprocess.run(
            ["kubectl", "ctrace", "target", name, "-n", k8s_namespace, "--func", "regenerate", "-o", "json",
             *bt.args],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        (t,) = Result(out.returncode, out.stdout, out.stderr).json()["targets"]
        assert t["pod"]["name"] == name and t["probes"][0]["argv"][0] == bt.path
    fires_only_in(t["probes"][0]["argv"], t["pid"], bt)


def test_ps_and_ns_show_the_pod_of_a_host_pid(cluster: Cluster, k8s_namespace: str) -> None:
    p = pods(cluster, k8s_namespace, "app=db")[0]
    (t,) = targets_of(k(cluster, "target", f"pod/{p['metadata']['name']}", "-n", k8s_namespace, "--func", "x",
                        "-o", "json"))  # fmt: skip
    host_pid = t["pid"]
    rows = {r["pid"]: r for r in k(cluster, "ps", "cilium-agent", "-o", "json").json()["processes"]}
    pod_of = rows[host_pid]["pod"]
    assert (pod_of["namespace"], pod_of["name"], pod_of["container"]) == (k8s_namespace, p["metadata"]["name"], "db")
    assert rows[host_pid]["container"]["id"] == cid(p, "db")
    d = k(cluster, "ns", str(host_pid), "-o", "json").json()
    assert d["pod"]["name"] == p["metadata"]["name"] and d["nspid"] == t["nspid"]
    # Without a reachable API the same commands still answer, from the runtime's own metadata.
    plain = ctrace("ps", "cilium-agent", "-o", "json", env={**os.environ, "KUBECONFIG": "", "HOME": "/nonexistent"})
    assert plain.code == 0 and host_pid in {r["pid"] for r in plain.json()["processes"]}


def test_inside_an_agent_the_other_nodes_replica_is_remote(kube: Kube, k8s_namespace: str) -> None:
    """In a pod (the node agent: in-cluster config, its ServiceAccount), the replica on the other
    node is not local: ctrace names that node's agent to run on, and refuses --folded for it."""
    need_bpftrace()
    live = kube.json("get", "pods", "-n", k8s_namespace, "-l", "k8s-app=cilium")["items"]
    here = sorted(kube.nodes())[0]
    agent = kube.agent_on(here)
    # -l, not ds/: manifests/rbac.yaml lets the agent read pods and nothing else (daemonsets: 403).
    out = kube.in_agent(agent, "ctrace", "target", "-l", "k8s-app=cilium", "-n", k8s_namespace,
                        "--func", "regenerate", "-o", "json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = Result(0, out.stdout, out.stderr).json()
    (local,) = data["targets"]
    (remote,) = data["remote"]
    assert local["pod"]["node"] == here and remote["pod"]["node"] != here
    assert {local["pod"]["name"], remote["pod"]["name"]} == {p["metadata"]["name"] for p in live}
    argv = remote["argv"]
    assert argv[:2] == ["kubectl", "exec"] and kube.agent_on(remote["pod"]["node"]) in argv
    assert argv[argv.index("--") + 1 :][:3] == ["ctrace", "target", f"pod/{remote['pod']['name']}"]
    # ds/ reads the DaemonSet: the agent's role refuses it, and ctrace says so in one line.
    refused = kube.in_agent(agent, "ctrace", "target", "ds/cilium", "-n", k8s_namespace, "--func", "regenerate")
    assert refused.returncode == 3 and "403 Forbidden" in refused.stderr.splitlines()[0], refused.stderr
    res = kube.in_agent(agent, "ctrace", "target", f"pod/{remote['pod']['name']}", "-n", k8s_namespace,
                        "--func", "regenerate", "--run", "--folded", "/tmp/out.folded")  # fmt: skip
    assert res.returncode == 2 and "--folded and --flamegraph are written on this node only" in res.stderr
