"""The Kubernetes path with the real client and real kubectl against tests/k8s_api.py.

Pods served by the local API server point at real docker containers started
here, so pod lookup, container ID -> host PID, the binary and the firing
bpftrace command are all real; only the API server is a stand-in (no cluster
can be created on this machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Bpftrace, Built, Result, ctrace, fire, need, run
from tests.k8s_api import ApiServer, pod, workload

REGEN = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"
NS = "kube-system"


@dataclass(frozen=True)
class Containers:
    agent_a: str  # docker IDs
    agent_b: str
    nested: str  # the agent one PID namespace deeper, as kind runs pods


def docker_id(name: str) -> str:
    return run(["docker", "inspect", "-f", "{{.Id}}", name]).stdout.strip()


@pytest.fixture(scope="module")
def containers(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containers]:
    need(shutil.which("docker") is not None, "docker is not installed")
    need(subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "no docker daemon answers")
    need(os.path.exists("/bin/busybox"), "busybox-static is not installed (make test installs it)")
    ctx = tmp_path_factory.mktemp("k8s-image")
    shutil.copy(built["cilium-agent"], ctx / "cilium-agent")
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\nCOPY cilium-agent /usr/bin/cilium-agent\nCOPY busybox /bin/busybox\n"
        'ENTRYPOINT ["/usr/bin/cilium-agent"]\n'
    )
    tag = f"ctrace-test/k8s-agent:{uuid.uuid4().hex[:8]}"
    run(["docker", "build", "-q", "-t", tag, str(ctx)])
    prefix = f"ctrace-k8s-{uuid.uuid4().hex[:6]}"
    names = [f"{prefix}-a", f"{prefix}-b", f"{prefix}-nested"]
    try:
        run(["docker", "run", "-d", "--name", names[0], tag])
        run(["docker", "run", "-d", "--name", names[1], tag])
        run(
            # unshare needs CAP_SYS_ADMIN; --privileged is refused in this sandbox ("unable to apply caps").
            ["docker", "run", "-d", "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
             "--security-opt", "apparmor=unconfined", "--name", names[2], "--entrypoint", "/bin/busybox", tag,
             "unshare", "--pid", "--fork", "--mount-proc", "/usr/bin/cilium-agent"]
        )  # fmt: skip
        yield Containers(*(docker_id(n) for n in names))
    finally:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@pytest.fixture(scope="module")
def api(containers: Containers) -> Iterator[ApiServer]:
    server = ApiServer()
    labels = {"k8s-app": "cilium"}
    server.pods = [
        pod("cilium-x7k2p", NS, f"docker://{containers.agent_a}", "node-a", labels),
        pod("cilium-9qz4m", NS, f"docker://{containers.agent_b}", "node-a", labels),
        # A replica on another node: its container is not on this machine.
        pod("cilium-remote", NS, f"containerd://{'ab' * 32}", "node-b", labels),
        pod("kind-like", NS, f"docker://{containers.nested}", "node-a"),
        pod("two-containers", NS, f"docker://{containers.agent_a}", "node-a", containers=("cilium-agent", "sidecar")),
        pod("ctrace-agent-node-b", "ctrace-system", "containerd://" + "cd" * 32, "node-b",
            {"app.kubernetes.io/name": "ctrace-agent"}),
    ]  # fmt: skip
    server.workloads = [
        workload("DaemonSet", "cilium", NS, labels),
        workload("Deployment", "cilium-operator", NS, labels),
    ]
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(api: ApiServer, tmp_path: Path) -> Path:
    api.answer = None
    return api.kubeconfig(tmp_path / "config", namespace=NS)


def k(kubeconfig: Path, *args: str) -> Result:
    return ctrace(*args, "--kubeconfig", str(kubeconfig), env={**os.environ, "KUBECONFIG": ""})


def targets_of(res: Result) -> list[dict[str, Any]]:
    assert res.code == 0, res.err
    found: list[dict[str, Any]] = res.json()["targets"]
    return found


def fires_only_in(argv: list[str], pid: int, bt: Bpftrace) -> None:
    """The printed line runs ``bt`` and fires in the pod's process only: pod B runs the same
    image, so the same file, and a program not bound to its target would count B too."""
    assert argv[0] == bt.path, argv
    result = fire(argv, REGEN, want=2)
    assert result.fired, (bt.version, result.stderr)
    assert result.pids == {pid} and not result.warnings, (bt.version, result.pids, result.warnings)


def test_pod_to_firing_command(kubeconfig: Path, containers: Containers, bpftraces: list[Bpftrace]) -> None:
    res = k(kubeconfig, "target", "pod/cilium-x7k2p", "--func", "regenerate", "-o", "json")
    (t,) = targets_of(res)
    assert t["runtime"] == "k8s"
    assert t["pod"] == {
        "namespace": NS,
        "name": "cilium-x7k2p",
        "uid": "uid-cilium-x7k2p",
        "container": "cilium-agent",
        "node": "node-a",
        "agent": None,
    }
    assert t["container"]["id"] == containers.agent_a
    host_pid = int(run(["docker", "inspect", "-f", "{{.State.Pid}}", containers.agent_a]).stdout)
    assert t["pid"] == host_pid and t["nspid"] == [host_pid, 1]
    assert t["binary"]["path"] == "/usr/bin/cilium-agent"
    for bt in bpftraces:
        (t,) = targets_of(k(kubeconfig, "target", "pod/cilium-x7k2p", "--func", "regenerate", "-o", "json", *bt.args))
        (probe,) = t["probes"]
        for cmd in [probe, *probe["alternatives"]]:
            fires_only_in(cmd["argv"], host_pid, bt)


def test_three_pid_namespaces_deep_reports_the_host_pid(
    kubeconfig: Path, containers: Containers, bpftraces: list[Bpftrace]
) -> None:
    (t,) = targets_of(k(kubeconfig, "target", "pod/kind-like", "--func", "regenerate", "-o", "json"))
    assert len(t["nspid"]) == 3 and t["nspid"][-1] == 1
    assert t["pid"] == t["nspid"][0] and t["pid"] != t["nspid"][1]
    assert os.path.exists(f"/proc/{t['pid']}") and Path(f"/proc/{t['pid']}/comm").read_text().strip() == "cilium-agent"
    for bt in bpftraces:
        (t,) = targets_of(k(kubeconfig, "target", "pod/kind-like", "--func", "regenerate", "-o", "json", *bt.args))
        probe = t["probes"][0]
        for cmd in [probe, *probe["alternatives"]]:
            fires_only_in(cmd["argv"], t["pid"], bt)


def test_daemonset_gives_a_command_per_replica(kubeconfig: Path, containers: Containers) -> None:
    res = k(kubeconfig, "target", "ds/cilium", "--func", "regenerate", "-o", "json")
    assert res.code == 0, res.err
    data = res.json()
    assert sorted(t["pod"]["name"] for t in data["targets"]) == ["cilium-9qz4m", "cilium-x7k2p"]
    assert {t["container"]["id"] for t in data["targets"]} == {containers.agent_a, containers.agent_b}
    (remote,) = data["remote"]
    assert remote["pod"]["name"] == "cilium-remote" and remote["pod"]["node"] == "node-b"
    argv = remote["argv"]
    assert argv[:2] == ["kubectl", "exec"] and "ctrace-agent-node-b" in argv
    assert argv[argv.index("--") + 1 :][:3] == ["ctrace", "target", "pod/cilium-remote"]
    assert "bpftrace" not in argv  # no host PID of another node is printed here


def test_deployment_and_selector(kubeconfig: Path, containers: Containers) -> None:
    for args in (["deploy/cilium-operator"], ["-l", "k8s-app=cilium"]):
        res = k(kubeconfig, "target", *args, "--func", "regenerate", "-o", "json")
        assert res.code == 0, res.err
        data = res.json()
        assert len(data["targets"]) == 2 and len(data["remote"]) == 1


def test_default_container_and_dash_c(kubeconfig: Path, containers: Containers) -> None:
    (t,) = targets_of(k(kubeconfig, "target", "pod/two-containers", "--func", "regenerate", "-o", "json"))
    assert t["pod"]["container"] == "cilium-agent"
    res = k(kubeconfig, "target", "pod/two-containers", "-c", "nope", "--func", "regenerate")
    assert res.code == 2 and "choose one of: cilium-agent, sidecar" in res.err


def test_namespace_comes_from_the_context(kubeconfig: Path, api: ApiServer) -> None:
    api.requests.clear()
    k(kubeconfig, "target", "pod/nothing-here", "--func", "x", "--context", "other")
    assert any("/namespaces/other-ns/pods/nothing-here" in r for r in api.requests)


@pytest.mark.parametrize(
    ("answer", "code", "words"),
    [
        (401, 3, "401 Unauthorized"),
        (403, 3, "403 Forbidden"),
        (404, 1, "not found"),
        ("timeout", 3, "did not answer within 1s"),
    ],
)
def test_api_errors_are_one_line(kubeconfig: Path, api: ApiServer, answer: int | str, code: int, words: str) -> None:
    api.answer = answer
    try:
        res = k(kubeconfig, "target", "pod/cilium-x7k2p", "--func", "regenerate", "--request-timeout", "1")
    finally:
        api.answer = None
    assert res.code == code, res
    lines = res.err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("ctrace: error: ") and lines[1].startswith("hint: ")
    assert words in lines[0]


def test_missing_kubeconfig(tmp_path: Path) -> None:
    res = ctrace("target", "pod/x", "--func", "f", "--kubeconfig", str(tmp_path / "nope"))
    assert res.code == 3 and "kubeconfig" in res.err and "Traceback" not in res.err


def test_real_kubectl_finds_and_runs_the_plugin(
    kubeconfig: Path, containers: Containers, bpftraces: list[Bpftrace]
) -> None:
    need(shutil.which("kubectl") is not None, "kubectl is not installed (make test installs it)")
    bindir = Path(sys.executable).parent
    need((bindir / "kubectl-ctrace").exists(), "kubectl-ctrace is not installed in the venv")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "KUBECONFIG": str(kubeconfig)}
    listed = subprocess.run(["kubectl", "plugin", "list"], capture_output=True, text=True, env=env)
    assert str(bindir / "kubectl-ctrace") in listed.stdout
    helped = subprocess.run(["kubectl", "ctrace", "--help"], capture_output=True, text=True, env=env)
    assert helped.stdout.startswith("usage: kubectl ctrace ")
    # Under kubectl a bare NAME is a pod, as with `kubectl logs NAME`; --bpftrace passes through.
    # The program is test_pod_to_firing_command's (the same pod through the same plan), which
    # fires every form under every version: here the newest runs, the others' argv[0] is checked.
    host_pid = int(run(["docker", "inspect", "-f", "{{.State.Pid}}", containers.agent_a]).stdout)
    for bt in bpftraces:
        out = subprocess.run(
            ["kubectl", "ctrace", "target", "cilium-x7k2p", "-n", NS, "--func", "regenerate", "-o", "json", *bt.args],
            capture_output=True,
            text=True,
            env=env,
        )
        assert out.returncode == 0, out.stderr
        (t,) = Result(out.returncode, out.stdout, out.stderr).json()["targets"]
        assert t["pod"]["name"] == "cilium-x7k2p" and t["probes"][0]["argv"][0] == bt.path
    fires_only_in(t["probes"][0]["argv"], host_pid, bt)


def test_ps_and_ns_show_the_pod_of_a_host_pid(kubeconfig: Path, containers: Containers) -> None:
    host_pid = int(run(["docker", "inspect", "-f", "{{.State.Pid}}", containers.agent_b]).stdout)
    rows = {p["pid"]: p for p in k(kubeconfig, "ps", "cilium-agent", "-o", "json").json()["processes"]}
    pod_of = rows[host_pid]["pod"]
    assert (pod_of["namespace"], pod_of["name"], pod_of["container"]) == (NS, "cilium-9qz4m", "cilium-agent")
    assert rows[host_pid]["container"]["id"] == containers.agent_b
    d = k(kubeconfig, "ns", str(host_pid), "-o", "json").json()
    assert d["pod"]["name"] == "cilium-9qz4m" and d["nspid"] == [host_pid, 1]
    # Without a reachable API the same commands still answer, without pods.
    # (Only this test's containers: a real cluster's CRI pods on this machine keep their pods.)
    plain = ctrace("ps", "cilium-agent", "-o", "json", env={**os.environ, "KUBECONFIG": "", "HOME": "/nonexistent"})
    ours = [
        p
        for p in plain.json()["processes"]
        if (p["container"] or {}).get("id") in (containers.agent_a, containers.agent_b)
    ]
    assert plain.code == 0 and ours and all(p["pod"] is None for p in ours)


def test_folded_is_not_promised_for_a_pod_on_another_node(kubeconfig: Path, containers: Containers) -> None:
    res = k(kubeconfig, "target", "pod/cilium-remote", "--func", "regenerate", "--run", "--folded", "out.folded")
    assert res.code == 2 and "--folded and --flamegraph are written on this node only" in res.err
