"""Containers of every runtime on one host, named, described and probed by ctrace; printed commands must fire.

Real runtimes: docker (the machine's dockerd), a containerd this session starts
with its own state directories (so no other user of docker's containerd is
disturbed), podman from Debian, and a kind-like node: a docker container
running containerd with a container inside it. Every name carries this
session's PID; everything started is removed at the end. PID 1 on these
machines reaps no orphans, so shims and conmons are started under a
subreaper (REAPER) that reaps them.

Cells of the runtime table (tests/runtime_report.py) are written where measured.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Bpftrace, Built, Processes, ctrace, fire, need, need_bpftrace, run
from tests.runtime_report import record

pytestmark = [pytest.mark.docker, pytest.mark.bpftrace]
P = f"ct14-{os.getpid()}"
UID = "3f1c2a4e-5b6d-4e7f-8a9b-" + secrets.token_hex(6)
NODE_UID = "9a8b7c6d-5e4f-4a3b-8c2d-" + secrets.token_hex(6)
NS = f"{P}-ns"
# A subreaper: runs argv, then reaps every orphan below it until none is left.
REAPER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER\n"
    "child = os.fork()\n"
    "if child == 0:\n"
    "    os.execvp(sys.argv[1], sys.argv[1:])\n"
    "signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGTERM))\n"
    "while True:\n"
    "    try:\n"
    "        os.wait()\n"
    "    except ChildProcessError:\n"
    "        break\n"
)
CRI = "io.kubernetes.cri."
API = f"{P}-api"  # container names of CRI pods
AGENT = f"{P}-agent"


def reaped(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-c", REAPER, *argv], stdout=out, stderr=out, stdin=subprocess.DEVNULL)


def cri_flags(container: str, pod: str, namespace: str, uid: str, kind: str = "container") -> list[str]:
    """The annotations containerd's CRI plugin writes into config.json, and the kubelet's labels."""
    notes = {
        "container-type": kind,
        "container-name": container,
        "sandbox-id": "0" * 64,
        "sandbox-name": pod,
        "sandbox-namespace": namespace,
        "sandbox-uid": uid,
    }
    labels = {
        "io.kubernetes.pod.name": pod,
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.pod.uid": uid,
        "io.kubernetes.container.name": container,
    }
    flags = [f"--annotation={CRI}{k}={v}" for k, v in notes.items()]
    return flags + [f"--label={k}={v}" for k, v in labels.items()]


@dataclass
class Node:
    """The runtimes of this session and what runs in them."""

    tmp: Path
    image_tar: Path
    image: str  # docker's tag
    sock: str = ""
    containerd: subprocess.Popen[bytes] | None = None
    reapers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ctr_tasks: list[tuple[str, str]] = field(default_factory=list)  # (namespace, id)
    docker_names: list[str] = field(default_factory=list)
    podman_names: list[str] = field(default_factory=list)
    podman_image: str = ""
    cgroups: list[str] = field(default_factory=list)

    def ctr(self, *args: str, ns: str = NS) -> str:
        return run(["ctr", "-a", self.sock, "-n", ns, *args], timeout=120).stdout

    def ctr_run(self, ident: str, *flags: str, ns: str = NS) -> int:
        self.ctr("run", "-d", "--null-io", *flags, "docker.io/" + self.image, ident, ns=ns)
        self.ctr_tasks.append((ns, ident))
        pid = int((self.tmp / "state" / "io.containerd.runtime.v2.task" / ns / ident / "init.pid").read_text())
        time.sleep(0.2)
        return pid

    def docker_run(self, name: str, *flags: str, image: str | None = None) -> int:
        self.docker_names.append(name)
        run(["docker", "run", "-d", "--name", name, *flags, image or self.image], timeout=120)
        return int(run(["docker", "inspect", "-f", "{{.State.Pid}}", name]).stdout)

    def podman_run(self, name: str) -> int:
        self.podman_names.append(name)
        flags = ["--runtime", "runc", "--cgroup-manager", "cgroupfs", "--network", "none"]
        flags += ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
        self.reapers.append(
            reaped(["podman", "run", "-d", "--name", name, *flags, self.podman_image], self.tmp / "podman.log")
        )
        for _ in range(100):
            got = subprocess.run(["podman", "inspect", "-f", "{{.State.Pid}}", name], capture_output=True, text=True)
            if got.returncode == 0 and got.stdout.strip() not in ("", "0"):
                return int(got.stdout)
            time.sleep(0.2)
        raise AssertionError(f"podman container {name} did not start: {(self.tmp / 'podman.log').read_text()}")

    def cleanup(self) -> None:
        self._stop_containerd()
        self._stop_others()

    def _stop_containerd(self) -> None:
        for ns, ident in self.ctr_tasks:
            subprocess.run(
                ["ctr", "-a", self.sock, "-n", ns, "task", "kill", "-s", "SIGKILL", ident], capture_output=True
            )
        for ns, ident in self.ctr_tasks:
            subprocess.run(["ctr", "-a", self.sock, "-n", ns, "task", "delete", "-f", ident], capture_output=True)
            subprocess.run(["ctr", "-a", self.sock, "-n", ns, "container", "delete", ident], capture_output=True)
        if self.containerd is not None:
            self.containerd.send_signal(signal.SIGTERM)
            try:
                self.containerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.containerd.kill()
                self.containerd.wait()

    def _stop_others(self) -> None:
        if self.docker_names:
            subprocess.run(["docker", "rm", "-f", *self.docker_names], capture_output=True)
        for name in self.podman_names:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
        if self.podman_image:
            subprocess.run(["podman", "rmi", "-f", self.podman_image], capture_output=True)
        for reaper in self.reapers:
            try:
                reaper.wait(timeout=30)
            except subprocess.TimeoutExpired:
                reaper.kill()
                reaper.wait()
        for path in self.cgroups:
            for ctl in Path("/sys/fs/cgroup").iterdir():
                subprocess.run(["rmdir", str(ctl) + path], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", self.image, f"{P}/node:1"], capture_output=True)
        subprocess.run(["umount", "-R", str(self.tmp / "state")], capture_output=True)
        shutil.rmtree(self.tmp / "root", ignore_errors=True)


def docker_answers() -> bool:
    return (
        shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0
    )


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory, built: Built) -> Iterator[Node]:
    need_bpftrace()
    need(docker_answers(), "no docker daemon answers (make test starts one)")
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2", "runc", "podman", "conmon"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (hack/setup.sh installs it)")
    tmp = tmp_path_factory.mktemp("runtimes")
    ctx = tmp / "image"
    ctx.mkdir()
    shutil.copy(built["hello"], ctx / "hello")
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY hello /hello\nENTRYPOINT ["/hello"]\n')
    image = f"{P}/hello:1"
    run(["docker", "build", "-q", "-t", image, str(ctx)], timeout=300)
    tar = tmp / "hello.tar"
    run(["docker", "save", "-o", str(tar), image], timeout=300)
    n = Node(tmp, tar, image)
    n.cgroups.append(f"/{NS}")  # ctr's default cgroup is /NAMESPACE/ID: runc removes the ID's only
    try:
        _start_containerd(n)
        yield n
    finally:
        n.cleanup()


def _start_containerd(n: Node) -> None:
    n.sock = str(n.tmp / "containerd.sock")
    config = n.tmp / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{n.tmp / "root"}"\nstate = "{n.tmp / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{n.sock}"\n[ttrpc]\n  address = "{n.sock}.ttrpc"\n'
    )
    n.containerd = reaped(["containerd", "--config", str(config)], n.tmp / "containerd.log")
    for _ in range(100):
        if subprocess.run(["ctr", "-a", n.sock, "version"], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    for ns in (NS, "k8s.io"):
        n.ctr("image", "import", str(n.image_tar), ns=ns)


@dataclass(frozen=True)
class Running:
    pid: int
    name: str


@pytest.fixture(scope="session")
def plain(node: Node) -> Running:
    return Running(node.ctr_run(f"{P}-plain"), f"{P}-plain")


@pytest.fixture(scope="session")
def cri(node: Node) -> Running:
    """A CRI container in namespace k8s.io, in kubelet's cgroupfs layout, with its pod's sandbox beside it."""
    ident = secrets.token_hex(32)
    node.cgroups.append(f"/kubepods/besteffort/pod{UID}")
    sandbox = [*cri_flags("POD", f"{P}-web", "shop", UID, kind="sandbox"), f"--label=app={P}-web", "--label=tier=api"]
    node.ctr_run(secrets.token_hex(32), *sandbox, ns="k8s.io")
    flags = [*cri_flags(API, f"{P}-web", "shop", UID), f"--cgroup=/kubepods/besteffort/pod{UID}/{ident}"]
    return Running(node.ctr_run(ident, *flags, ns="k8s.io"), ident)


def data(*args: str) -> Any:
    res = ctrace(*args, "-o", "json")
    assert res.code == 0, res.err
    return res.json()


def only_target(*args: str) -> dict[str, Any]:
    targets = data("target", *args, "--func", "hello")["targets"]
    assert len(targets) == 1, [t["pid"] for t in targets]
    found: dict[str, Any] = targets[0]
    return found


def pids_fired(argv: Sequence[str], prefix: Sequence[str] = (), want: int = 3, timeout: float = 15) -> list[int]:
    """The PIDs (as the kernel's init namespace counts them) that a printed command's probe fires in:

    its probe and filter unchanged, its action replaced by one that prints the PID."""
    program = argv[argv.index("-e") + 1]
    probe = r"(\bu(?:ret)?probe:[^{]*\{)[^}]*\}"  # the uprobe's block; BEGIN, END and tracepoints stay
    labelled = re.sub(probe, lambda m: m.group(1) + ' printf("PID %d\\n", pid); }', program)
    args = [*prefix, *argv[: argv.index("-e") + 1], labelled, *argv[argv.index("-e") + 2 :]]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(seen) < want and proc.poll() is None:
        if sel.select(timeout=0.2):
            m = re.match(r"PID (\d+)$", proc.stdout.readline().strip())
            if m:
                seen.append(int(m.group(1)))
    os.killpg(proc.pid, signal.SIGINT)  # nsenter and unshare fork: the whole group, or bpftrace lives on
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    return seen


def commands(target: dict[str, Any]) -> list[dict[str, Any]]:
    """The recommended command of the first probe, then its alternatives."""
    probe = target["probes"][0]
    return [{"form": probe["form"], "argv": probe["argv"]}, *probe["alternatives"]]


def bound(argv: Sequence[str]) -> bool:
    """Whether the program itself keeps other processes out (a predicate before its action).

    bpftrace 0.17's -p alone does not: on this kernel a uprobe bound by -p fires
    in every process that runs the same file (a pod's sandbox and its app share
    the image's layer); the binding work of issue 13 adds the predicate."""
    program = argv[list(argv).index("-e") + 1]
    return re.search(r"\bu(?:ret)?probe:[^{]*/[^{]*\b(pid|tid|cgroup|mntns)\b[^{]*/\s*\{", program) is not None


def forms_fired(target: dict[str, Any], row: str, bts: Sequence[Bpftrace], *args: str) -> list[str]:
    """Ask ctrace for ``args``'s program with each bpftrace's --bpftrace (-p and path handling
    differ by version): every printed form must fire on the target's PID; one bound by a
    predicate on it alone (the pod's sandbox runs the same file: the decoy)."""
    every: dict[str, list[str]] = {}
    leaked: set[str] = set()
    for bt in bts:
        seen = only_target(*args, *bt.args)
        assert seen["pid"] == target["pid"]
        fired = []
        for cmd in commands(seen):
            assert cmd["argv"][0] == bt.path, cmd["argv"]  # the line runs the bpftrace it was printed for
            result = fire(cmd["argv"], "hello")
            where = (bt.version, cmd["form"])
            assert result.fired, (*where, result.stderr)
            assert not result.warnings, (*where, result.warnings)
            got = set(pids_fired(cmd["argv"]))
            assert target["pid"] in got, where
            if bound(cmd["argv"]):
                assert got == {target["pid"]}, (*where, got)
            elif got != {target["pid"]}:
                leaked.add(f"{cmd['form']} ({bt.version})")
            fired.append(cmd["form"])
        every[bt.version] = fired
    assert len({tuple(f) for f in every.values()}) == 1, every
    note = f"; also fired in a decoy (-p only, no predicate): {', '.join(sorted(leaked))}" if leaked else ""
    record(row, "fired from the host", "yes: " + ", ".join(fired) + f" (bpftrace {', '.join(every)})" + note)
    return fired


def test_containerd_plain(node: Node, plain: Running, cri: Running, bpftraces: list[Bpftrace]) -> None:
    row = "containerd plain"
    t = only_target(plain.name)
    c = t["container"]
    assert (t["pid"], c["runtime"], c["namespace"], c["id"], c["name"]) == (
        plain.pid,
        "containerd",
        NS,
        plain.name,
        plain.name,
    )
    record(row, "by name", "yes")
    assert c["image"] == f"docker.io/{node.image}"  # from containerd's metadata database
    record(row, "identity", "runtime, namespace, name, ID, image (meta.db)")
    # no ctr, crictl or podman on the way: the state files alone
    res = ctrace("target", plain.name, "--func", "hello", "-o", "json", env={**os.environ, "PATH": "/nonexistent"})
    assert res.code == 0 and res.json()["targets"][0]["pid"] == plain.pid, res.err
    by_pid = only_target(f"pid:{plain.pid}")
    assert by_pid["container"]["id"] == plain.name
    record(row, "by PID", "yes")
    assert t["pod"] is None
    record(row, "pod", "none (correct)")
    rootfs = t["binary"]["merged_path"]
    assert rootfs == str(node.tmp / "state" / "io.containerd.runtime.v2.task" / NS / plain.name / "rootfs" / "hello")
    record(row, "root filesystem path", "task rootfs")
    assert "rootfs" in forms_fired(t, row, bpftraces, plain.name)
    record(row, "fired inside the node", "n/a")


def test_containerd_cri(node: Node, cri: Running, plain: Running, bpftraces: list[Bpftrace]) -> None:
    row = "containerd CRI"
    t = only_target(API, "--runtime", "containerd")
    assert t["pid"] == cri.pid and t["container"]["id"] == cri.name and t["container"]["namespace"] == "k8s.io"
    record(row, "by name", "yes (container name, pod name, ID)")
    pod = t["pod"]
    assert (pod["namespace"], pod["name"], pod["uid"], pod["container"]) == ("shop", f"{P}-web", UID, API)
    record(row, "pod", "namespace, name, UID, container (annotations); -l from the sandbox's labels (meta.db)")
    assert only_target(f"{P}-web")["pid"] == cri.pid  # the pod's name: its app container, not the sandbox
    assert only_target(cri.name[:12])["pid"] == cri.pid
    by_pid = only_target(str(cri.pid))
    assert by_pid["pod"]["name"] == f"{P}-web" and by_pid["container"]["runtime"] == "containerd"
    record(row, "by PID", "yes")
    assert t["container"]["image"] == f"docker.io/{node.image}"
    record(row, "identity", "runtime, namespace, name, ID, image (meta.db)")
    assert t["binary"]["merged_path"].endswith(f"/k8s.io/{cri.name}/rootfs/hello")
    record(row, "root filesystem path", "task rootfs")
    assert "rootfs" in forms_fired(t, row, bpftraces, API, "--runtime", "containerd")
    record(row, "fired inside the node", "n/a")


def test_pods_on_the_node_without_an_api_server(cri: Running, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config: nothing to ask but the node
    for args in (["-n", "shop"], [], ["-c", API]):
        res = ctrace("target", f"pod/{P}-web", *args, "--func", "hello", "-o", "json", env=env)
        assert res.code == 0, res.err
        assert [t["pid"] for t in res.json()["targets"]] == [cri.pid]  # the app, never the sandbox
    res = ctrace("target", f"pod/{P}-web", "-n", "other", "--func", "hello", env=env)
    assert res.code == 1 and "no kubeconfig or in-cluster config" in res.err
    # labels: the sandbox's, in containerd's metadata database
    res = ctrace("target", "-l", f"app={P}-web,tier!=db", "-n", "shop", "--func", "hello", "-o", "json", env=env)
    assert res.code == 0, res.err
    assert [t["pid"] for t in res.json()["targets"]] == [cri.pid]
    # (A label of this session's: the local cluster's pods, on this machine's nodes, may carry app=db.)
    res = ctrace("target", "-l", f"app={P}-db", "--func", "hello", env=env)
    assert res.code == 1 and f"no pods matching 'app={P}-db'" in res.err, res.err


def test_kubeconfig_of_missing_files_resolves_from_cri_metadata(cri: Running, tmp_path: Path) -> None:
    """kubectl skips a missing file in KUBECONFIG; none left is no kubeconfig: the node's pods (issue 22)."""
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["HOME"] = str(tmp_path)
    env["KUBECONFIG"] = "/nonexistent"
    res = ctrace("target", f"pod/{P}-web", "-n", "shop", "--func", "hello", "-o", "json", env=env)
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    assert t["pid"] == cri.pid and t["pod"]["name"] == f"{P}-web" and t["pod"]["namespace"] == "shop"


def test_with_an_api_server_the_two_sources_agree(cri: Running, tmp_path: Path) -> None:
    """The fake API server (tests/k8s_api.py): a real one never names, for a container of this
    test's own containerd, a pod the runtime's CRI metadata contradicts (the "liar")."""
    from tests.k8s_api import ApiServer, pod

    server = ApiServer()
    try:
        server.pods = [
            pod(f"{P}-web", "shop", f"containerd://{cri.name}", "node-x", containers=(API,), uid=UID),
            pod(f"{P}-liar", "shop", f"containerd://{cri.name}", "node-x", containers=(API,)),
        ]
        config = server.kubeconfig(tmp_path / "config", namespace="shop")
        env = {**os.environ, "KUBECONFIG": ""}
        res = ctrace("target", f"pod/{P}-web", "--kubeconfig", str(config), "--func", "hello", "-o", "json", env=env)
        assert res.code == 0, res.err
        (t,) = res.json()["targets"]
        assert t["pid"] == cri.pid and t["pod"]["name"] == f"{P}-web" and t["container"]["namespace"] == "k8s.io"
        assert t["binary"]["merged_path"].endswith("/rootfs/hello")  # the runtime's root filesystem, too
        assert not any("disagree" in w or "CRI metadata says" in w for w in t["warnings"])
        res = ctrace("target", f"pod/{P}-liar", "--kubeconfig", str(config), "--func", "hello", "-o", "json", env=env)
        (t,) = res.json()["targets"]
        assert any(f"the runtime's CRI metadata says shop/{P}-web" in w for w in t["warnings"]), t["warnings"]
    finally:
        server.stop()


def test_ns_and_ps_text_show_container_and_pod(cri: Running) -> None:
    res = ctrace("ns", str(cri.pid))
    assert res.code == 0, res.err
    assert f"containerd {API} {cri.name[:12]} namespace k8s.io" in res.out
    assert f"shop/{P}-web container {API} uid {UID}" in res.out
    res = ctrace("ps", "--container", API)
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0].split()[4:8] == ["RUNTIME", "CONTAINER", "CONTAINER", "ID"]
    assert [ln.split()[0] for ln in lines[1:]] == [str(cri.pid)]
    assert f"shop/{P}-web" in lines[1] and "containerd" in lines[1]


def test_podman(node: Node, plain: Running, bpftraces: list[Bpftrace]) -> None:
    row = "podman"
    loaded = run(["podman", "load", "-i", str(node.image_tar)], timeout=300).stdout
    node.podman_image = loaded.strip().splitlines()[-1].split("Loaded image:")[-1].strip()
    pid = node.podman_run(f"{P}-pm")
    t = only_target(f"{P}-pm")
    c = t["container"]
    assert (t["pid"], c["runtime"], c["name"]) == (pid, "podman", f"{P}-pm")
    assert c["image"] == node.podman_image and len(c["id"]) == 64
    record(row, "by name", "yes")
    record(row, "identity", "runtime, name, ID, image (containers.json)")
    assert only_target(f"pid:{pid}")["container"]["name"] == f"{P}-pm"
    record(row, "by PID", "yes")
    record(row, "pod", "none (correct)")
    assert t["binary"]["merged_path"].startswith("/var/lib/containers/storage/overlay/")
    record(row, "root filesystem path", "overlay merged mount (config.json root.path)")
    assert "rootfs" in forms_fired(t, row, bpftraces, f"{P}-pm")
    record(row, "fired inside the node", "n/a")


def test_docker(node: Node, plain: Running, bpftraces: list[Bpftrace]) -> None:
    row = "docker"
    pid = node.docker_run(f"{P}-dk")
    t = only_target(f"{P}-dk")
    assert t["pid"] == pid and t["container"]["runtime"] == "docker" and t["container"]["image"] == node.image
    record(row, "by name", "yes")
    record(row, "identity", "runtime, name, ID, image (Engine API)")
    assert only_target(f"pid:{pid}")["container"]["name"] == f"{P}-dk"
    record(row, "by PID", "yes")
    record(row, "pod", "none (correct)")
    assert t["container"]["merged_dir"] and t["binary"]["merged_path"].startswith(t["container"]["merged_dir"])
    record(row, "root filesystem path", "MergedDir")
    assert "merged" in forms_fired(t, row, bpftraces, f"{P}-dk")
    record(row, "fired inside the node", "n/a")


def test_exact_name_beats_prefix_and_runtimes_conflict(node: Node, built: Built, processes: Processes) -> None:
    name = f"{P}orders"
    copy = node.tmp / name
    shutil.copy(built["hello"], copy)
    host = processes.start(copy)
    one, two = node.ctr_run(f"{name}-1"), node.ctr_run(f"{name}-2")
    t = only_target(name)
    assert t["pid"] == host.pid and t["container"] is None  # the process named exactly, not the containers
    res = ctrace("target", f"{name}-", "--func", "hello")
    assert res.code == 2 and "matches 2 containers" in res.err and f"{name}-1" in res.err and f"{name}-2" in res.err
    both = data("target", f"{name}-", "--all", "--func", "hello")["targets"]
    assert sorted(x["pid"] for x in both) == sorted([one, two])
    # the same exact name in two runtimes: an error naming both, and --runtime chooses
    twin = f"{P}-twin"
    node.ctr_run(twin)
    node.docker_run(twin)
    res = ctrace("target", twin, "--func", "hello")
    assert res.code == 2, res.err
    assert "docker container" in res.err and "containerd container" in res.err and "--runtime docker" in res.err
    assert only_target(twin, "--runtime", "docker")["container"]["runtime"] == "docker"
    assert only_target(twin, "--runtime", "containerd")["container"]["runtime"] == "containerd"


def test_unknown_runtime_lists_every_runtime() -> None:
    res = ctrace("target", "x", "--runtime", "rkt", "--func", "f")
    assert res.code == 2
    assert "choose one of: host, k8s, docker, containerd, podman, cri-o" in res.err


NODE_INIT = """#!/bin/sh
# cgroup v1: docker mounts the node's cgroups read-only; a kind node makes them writable for its runc
for d in /sys/fs/cgroup/*; do [ -L "$d" ] || mount -o remount,bind,rw "$d"; done
exec /usr/bin/containerd
"""


@pytest.fixture(scope="session")
def kind_node(node: Node) -> Iterator[tuple[str, int]]:
    """A docker container running containerd (as kind builds a node), from this host's binaries."""
    ctx = node.tmp / "node"
    for rel in ("usr/bin", "usr/sbin", "lib/x86_64-linux-gnu", "lib64", "etc/containerd", "bin"):
        (ctx / rel).mkdir(parents=True)
    for tool, dest in (("containerd", "usr/bin"), ("containerd-shim-runc-v2", "usr/bin"), ("ctr", "usr/bin")):
        shutil.copy(shutil.which(tool) or tool, ctx / dest)
    shutil.copy(shutil.which("runc") or "runc", ctx / "usr/sbin")
    shutil.copy("/bin/busybox", ctx / "bin")
    (ctx / "bin" / "sh").symlink_to("busybox")
    for lib in ("libc.so.6", "libseccomp.so.2"):
        shutil.copy(f"/lib/x86_64-linux-gnu/{lib}", ctx / "lib/x86_64-linux-gnu")
    shutil.copy("/lib64/ld-linux-x86-64.so.2", ctx / "lib64")
    (ctx / "etc/containerd/config.toml").write_text('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
    (ctx / "init.sh").write_text(NODE_INIT)
    (ctx / "init.sh").chmod(0o755)
    shutil.copy(node.image_tar, ctx / "img.tar")
    (ctx / "Dockerfile").write_text(
        'FROM scratch\nCOPY . /\nENV PATH=/usr/bin:/usr/sbin:/bin\nENTRYPOINT ["/init.sh"]\n'
    )
    run(["docker", "build", "-q", "-t", f"{P}/node:1", str(ctx)], timeout=300)
    name = f"{P}-node"
    flags = ["--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined"]
    flags += ["--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined"]
    flags += [
        "--device-cgroup-rule",
        "a *:* rwm",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/var/lib/containerd",
        "--tmpfs",
        "/tmp",
    ]
    node_pid = node.docker_run(name, *flags, image=f"{P}/node:1")
    for _ in range(100):
        if subprocess.run(["docker", "exec", name, "ctr", "version"], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    run(["docker", "exec", name, "ctr", "-n", "k8s.io", "image", "import", "/img.tar"], timeout=120)
    yield name, node_pid


def _nested(kind_node: tuple[str, int], ident: str, *flags: str) -> int:
    name, _ = kind_node
    image = f"docker.io/{P}/hello:1"
    run(["docker", "exec", name, "ctr", "-n", "k8s.io", "run", "-d", "--null-io", *flags, image, ident], timeout=120)
    out = run(
        [
            "docker",
            "exec",
            name,
            "busybox",
            "cat",
            f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{ident}/init.pid",
        ]
    )
    node_ns_pid = int(out.stdout)
    for pid in os.listdir("/proc"):  # the host PID whose NSpid ends with the node's PID of it
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"^NSpid:\s+(.*)$", status, re.M)
        if m and len(m.group(1).split()) == 3 and int(m.group(1).split()[1]) == node_ns_pid:
            return int(pid)
    raise AssertionError(f"no host PID for {ident}")


def test_kind_like_nested_node(kind_node: tuple[str, int], bpftraces: list[Bpftrace]) -> None:
    row = "kind-like nested"
    name, node_pid = kind_node
    inner = f"{P}-inner"  # an ID that is not 64 hex: once labelled as the node container
    pid = _nested(kind_node, inner, *cri_flags(AGENT, f"{P}-kpod", "kube-system", NODE_UID))
    hexid = secrets.token_hex(32)  # a 64-hex ID in kubelet's layout: once the node went unmentioned
    pid2 = _nested(kind_node, hexid, f"--cgroup=/kubepods/besteffort/pod{NODE_UID}/{hexid}")
    t = only_target(AGENT)
    assert t["pid"] == pid and len(t["nspid"]) == 3 and t["nspid"][-1] == 1
    c = t["container"]
    assert (c["runtime"], c["namespace"], c["id"]) == ("containerd", "k8s.io", inner)
    assert (c["node"]["runtime"], c["node"]["name"]) == ("docker", name)
    assert c["image"] == f"docker.io/{P}/hello:1"  # the node's meta.db, through the shim's root
    assert (t["pod"]["namespace"], t["pod"]["name"], t["pod"]["node"]) == ("kube-system", f"{P}-kpod", name)
    record(row, "by name", "yes (innermost container and pod; node container named too)")
    record(row, "identity", "inner: runtime, namespace, name, ID, image (node's meta.db); node: docker name, ID, image")
    record(row, "pod", "namespace, name, UID, container; node = the node container")
    t2 = only_target(f"pid:{pid2}")
    assert t2["container"]["id"] == hexid and t2["container"]["node"]["name"] == name
    assert t2["pod"] is None
    record(row, "by PID", "yes (NSpid of length 3)")
    text = ctrace("target", AGENT, "--func", "hello").out
    assert (
        f"pod kube-system/{P}-kpod container {AGENT} [containerd {inner[:12]}] on {name}, in docker container {name}"
        in text
    )
    assert t["binary"]["merged_path"].endswith(
        f"/run/containerd/io.containerd.runtime.v2.task/k8s.io/{inner}/rootfs/hello"
    )
    record(row, "root filesystem path", "/proc/<shim>/root + the node's task rootfs")
    forms_fired(t, row, bpftraces, AGENT)
    # Inside the node's PID namespace (a node agent with hostPID on kind): ctrace sees the node's /proc.
    inside = ["nsenter", "-t", str(node_pid), "-p", "--", "unshare", "-m", "--mount-proc"]
    res = subprocess.run([*inside, sys.executable, "-m", "ctrace", "target", AGENT, "--func", "hello", "-o", "json"],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)  # fmt: skip
    assert res.returncode == 0, res.stderr
    (seen,) = json.loads(res.stdout)["targets"]
    assert seen["nspid"] == t["nspid"][1:] and seen["container"]["id"] == inner
    fired, leaked = [], []
    for cmd in commands(seen):
        pids = set(pids_fired(cmd["argv"], inside, timeout=8))
        if not pids:
            continue
        assert pid in pids, cmd["form"]  # the kernel reports the host PID
        if bound(cmd["argv"]):
            assert pids == {pid}, (cmd["form"], pids)
        elif pids != {pid}:
            leaked.append(cmd["form"])
        fired.append(cmd["form"])
    silent = [c["form"] for c in commands(seen) if c["form"] not in fired]
    if leaked:
        silent.append("also fired in a decoy: " + ", ".join(leaked))
    assert seen["probes"][0]["form"] in fired  # the recommended command fires
    record(
        row, "fired inside the node", "yes: " + ", ".join(fired) + ("; silent: " + ", ".join(silent) if silent else "")
    )
    for r in ("docker", "containerd plain", "containerd CRI", "podman"):
        record(r, "fired inside the node", "n/a")
