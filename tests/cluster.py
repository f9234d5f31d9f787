"""The local Kubernetes cluster of hack/cluster.sh (Kubernetes 1.20 built from Debian's source,
two worker nodes as kind makes them), one per pytest session: the first test that asks for it
brings it up, the session's end takes it down (tests/conftest.py's ``cluster`` fixture).

Its control plane outlives ``hack/cluster.sh up``; this machine's PID 1 reaps no orphan, so the
session makes itself a child subreaper and reaps the daemons it started once they are stopped.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SH = ROOT / "hack" / "cluster.sh"
STATE = Path(os.environ.get("CTRACE_CLUSTER_STATE", "/var/lib/ctrace-cluster"))
NODES = ("ctrace-worker1", "ctrace-worker2")
PREFIX = "ctrace-cluster"  # docker container names, the cgroup root (hack/cluster.sh)
VETH = re.compile(r"^ctk-w\d+$")
PR_SET_CHILD_SUBREAPER = 36


def make_subreaper() -> None:
    """Orphans of what this process starts come back to it (not to PID 1, which reaps none)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def recorded_pids() -> dict[str, int]:
    """The control plane's processes as hack/cluster.sh recorded them."""
    found = {}
    for f in (STATE / "pids").glob("*.pid"):
        try:
            found[f.stem] = int(f.read_text())
        except (OSError, ValueError):
            continue
    return found


def reap(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not ours: another session started it


def running(pid: int) -> bool:
    """Exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sh(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=timeout)


def is_up() -> bool:
    return sh("status", timeout=60).returncode == 0


@dataclass
class Cluster:
    kubeconfig: Path  # the admin's
    user_kubeconfig: Path  # ctrace-user's: a token, no role
    bin: Path  # the built Kubernetes binaries (kubectl 1.20 among them)
    up_seconds: float
    was_up: bool  # up before this session: left up at its end
    loaded: set[str] = field(default_factory=set)

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 180, user: bool = False, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        config = self.user_kubeconfig if user else self.kubeconfig
        res = subprocess.run(
            [str(self.bin / "kubectl"), "--kubeconfig", str(config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {res.stderr}")
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def apply(self, text: str) -> None:
        self.kubectl("apply", "-f", "-", stdin=text)

    def load(self, *images: str) -> None:
        todo = [i for i in images if i not in self.loaded]
        if not todo:
            return
        res = sh("load", *todo, timeout=900)
        assert res.returncode == 0, res.stderr
        self.loaded.update(todo)

    def rollout(self, what: str, namespace: str, timeout: int = 240) -> None:
        self.kubectl("rollout", "status", what, "-n", namespace, f"--timeout={timeout}s", timeout=timeout + 30)


def diagnose() -> str:
    """What a failed ``up`` left to read: the tail of every log of the control plane and nodes."""
    parts = []
    for log in sorted((STATE / "logs").glob("*.log")):
        parts.append(f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    for node in NODES:
        for what in ("/var/log/kubelet/kubelet.log", "/var/log/containerd/containerd.log"):
            out = subprocess.run(
                ["docker", "exec", f"{PREFIX}-{node}", "tail", "-n", "15", what], capture_output=True, text=True
            )
            parts.append(f"== {node}:{what}\n{out.stdout}{out.stderr}")
    return "\n".join(parts)


def up(was_up: bool) -> Cluster:
    start = time.monotonic()
    res = sh("up")
    if res.returncode != 0:
        logs = diagnose()
        if not was_up:
            down()  # nothing half-made is left for the next run
        raise AssertionError(f"hack/cluster.sh up failed:\n{res.stderr[-3000:]}\n{logs[-6000:]}")
    seconds = time.monotonic() - start
    kubeconfig = Path(sh("kubeconfig").stdout.strip())
    user = Path(sh("kubeconfig", "--user").stdout.strip())
    return Cluster(kubeconfig, user, Path((STATE / "bin").read_text().strip()), seconds, was_up)


def down() -> tuple[subprocess.CompletedProcess[str], float, list[int]]:
    pids = list(recorded_pids().values())
    start = time.monotonic()
    res = sh("down", timeout=300)
    seconds = time.monotonic() - start
    reap(pids)
    return res, seconds, pids


def session_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, ValueError, IndexError):
        return -1


def leftovers(started: list[int]) -> dict[str, list[str]]:
    """Everything of the cluster's own that is still on the machine, by kind: a process of a
    session it started (``started``: each daemon leads one), or in a node's cgroup; its docker
    containers, veths, mounts, cgroups and state. Another user's kubectl is not the cluster's."""
    found: dict[str, list[str]] = {"processes": [], "containers": [], "veths": [], "netns": [], "mounts": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not running(int(entry.name)):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        if session_of(int(entry.name)) in started or f"/{PREFIX}/" in cgroup:
            found["processes"].append(f"{entry.name} {cmdline.strip()}")
    names = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label={PREFIX}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    found["containers"] = names
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found["veths"] = [m for m in re.findall(r"^\d+: ([^:@]+)", links, re.M) if VETH.match(m)]
    netns = Path("/run/netns")
    found["netns"] = [p.name for p in netns.iterdir() if PREFIX in p.name] if netns.is_dir() else []
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    found["mounts"] = [m for m in mounts if str(STATE) in m or PREFIX in m]
    found["cgroups"] = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{PREFIX}")]
    found["state"] = [str(STATE)] if STATE.exists() else []
    return {k: v for k, v in found.items() if v}


def local_image(name: str, files: dict[str, Path], entrypoint: list[str]) -> str:
    """A docker image FROM scratch of ``files`` (path in the image -> file here), built here."""
    with tempfile.TemporaryDirectory() as ctx:
        lines = ["FROM scratch"]
        for i, (dest, src) in enumerate(files.items()):
            Path(ctx, f"f{i}").write_bytes(src.read_bytes())
            os.chmod(Path(ctx, f"f{i}"), 0o755)
            lines.append(f"COPY f{i} {dest}")
        lines.append(f"ENTRYPOINT {json.dumps(entrypoint)}")
        Path(ctx, "Dockerfile").write_text("\n".join(lines) + "\n")
        subprocess.run(["docker", "build", "-q", "-t", name, ctx], check=True, capture_output=True, text=True)
    return name


@dataclass(frozen=True)
class Kube:
    """One cluster as ctrace and kubectl reach it: a kind context, or the local cluster's kubeconfig."""

    kubectl_bin: str
    where: tuple[str, ...]  # ("--context", NAME) or ("--kubeconfig", PATH): for ctrace and kubectl alike

    def kubectl(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([self.kubectl_bin, *self.where, *args], capture_output=True, text=True, timeout=timeout)
        if check:
            assert res.returncode == 0, f"kubectl {' '.join(args)}: {res.stderr}"
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def nodes(self) -> set[str]:
        """The nodes a DaemonSet without tolerations runs on (kind's control plane is tainted)."""
        return {n["metadata"]["name"] for n in self.json("get", "nodes")["items"] if not n["spec"].get("taints")}

    def agent_on(self, node: str) -> str:
        names = self.kubectl(
            "get", "pods", "-n", "ctrace-system", "-o", "name", "--field-selector", f"spec.nodeName={node}",
            "-l", "app.kubernetes.io/name=ctrace-agent",
        ).stdout.split()  # fmt: skip
        assert len(names) == 1, names
        return names[0].split("/", 1)[1]

    def in_agent(self, agent: str, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.kubectl("exec", "-n", "ctrace-system", agent, "--", *argv, timeout=timeout, check=False)


MANIFESTS = ROOT / "manifests"
CILIUM_IMAGE = "ctrace/cilium-agent:dev"


def cilium_image(cilium_agent: Path) -> str:
    """demo/cilium-agent's image (its Dockerfile is FROM scratch) from the session's binary."""
    with tempfile.TemporaryDirectory() as ctx:
        Path(ctx, "cilium-agent").write_bytes(cilium_agent.read_bytes())
        os.chmod(Path(ctx, "cilium-agent"), 0o755)
        Path(ctx, "Dockerfile").write_text((ROOT / "demo" / "cilium-agent" / "Dockerfile").read_text())
        subprocess.run(["docker", "build", "-q", "-t", CILIUM_IMAGE, ctx], check=True, capture_output=True, text=True)
    return CILIUM_IMAGE


def deploy_manifests(cluster: Cluster, cilium_agent: Path) -> Kube:
    """What hack/kind-test.sh does for kind, on the local cluster: the agent image built here
    (hack/agent-image.sh), both images loaded, manifests/ applied as they are."""
    agent = subprocess.run(
        [str(ROOT / "hack" / "agent-image.sh")], check=True, capture_output=True, text=True, timeout=1800
    ).stdout.strip()
    cluster.load(agent, cilium_image(cilium_agent))
    kube = Kube(str(cluster.bin / "kubectl"), ("--kubeconfig", str(cluster.kubeconfig)))
    files = ("namespace.yaml", "rbac.yaml", "agent.yaml", "demo-cilium.yaml")
    kube.kubectl("apply", *(f"-f={MANIFESTS / m}" for m in files))
    for ns, ds, image in (("ctrace-system", "ctrace-agent", agent), ("kube-system", "cilium", CILIUM_IMAGE)):
        kube.kubectl("-n", ns, "rollout", "status", f"ds/{ds}", "--timeout=300s", timeout=330)
        # A cluster that was up before (a developer's) may run an older build of the same tag.
        if stale(kube, ns, ds, image):
            kube.kubectl("-n", ns, "rollout", "restart", f"ds/{ds}")
            kube.kubectl("-n", ns, "rollout", "status", f"ds/{ds}", "--timeout=300s", timeout=330)
    return kube


def stale(kube: Kube, namespace: str, ds: str, image: str) -> bool:
    """Whether a pod of the DaemonSet runs other content than the local docker image ``image``."""
    want = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    selector = ",".join(
        f"{k}={v}" for k, v in kube.json("get", "ds", ds, "-n", namespace)["spec"]["selector"]["matchLabels"].items()
    )
    pods = kube.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    ids = {s.get("imageID", "") for p in pods for s in p["status"].get("containerStatuses", [])}
    return ids != {want}


WORKLOADS = """
apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: cilium, namespace: {ns}, labels: {{k8s-app: cilium}}}}
spec:
  selector: {{matchLabels: {{k8s-app: cilium}}}}
  template:
    metadata: {{labels: {{k8s-app: cilium}}}}
    spec:
      containers: [{{name: cilium-agent, image: {image}, imagePullPolicy: Never}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: cilium-operator, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: operator}}}}
  template:
    metadata: {{labels: {{app: operator}}}}
    spec:
      containers: [{{name: cilium-agent, image: {image}, imagePullPolicy: Never}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {ns}}}
spec: {{clusterIP: None, selector: {{app: db}}, ports: [{{port: 80}}]}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {ns}}}
spec:
  serviceName: db
  replicas: 1
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers: [{{name: db, image: {image}, imagePullPolicy: Never}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: two-containers, namespace: {ns}}}
spec:
  containers:
    - {{name: cilium-agent, image: {image}, imagePullPolicy: Never}}
    - {{name: sidecar, image: {image}, imagePullPolicy: Never}}
"""


def deploy_workloads(cluster: Cluster, namespace: str, cilium_agent: Path) -> None:
    """A namespace of the session's own: a DaemonSet (one replica per node), a Deployment of 2, a
    StatefulSet of 1 and a pod of two containers, all demo/cilium-agent."""
    cluster.load(cilium_image(cilium_agent))
    cluster.apply(WORKLOADS.format(ns=namespace, image=CILIUM_IMAGE))
    for what in ("ds/cilium", "deploy/cilium-operator", "sts/db"):
        cluster.rollout(what, namespace)
    cluster.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/two-containers", "--timeout=180s")
