"""The fan-out on the real local cluster (hack/cluster.sh): the workload, the agents, the client
as a user runs it, and what runs on each node (tests/test_fanout_cluster.py, benchmarks/fanout.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml


class Cluster(Protocol):
    """What these helpers use of tests/cluster.py's Cluster (the cluster issue's session fixture)."""

    kubeconfig: Path
    user_kubeconfig: Path
    loaded: set[str]

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 180, user: bool = False, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]: ...

    def json(self, *args: str) -> Any: ...

    def apply(self, text: str) -> None: ...

    def load(self, *images: str) -> None: ...

    def rollout(self, what: str, namespace: str, timeout: int = 240) -> None: ...


ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "tests" / "fixtures" / "src"
TICK_IMAGE = "ctrace/tick:test"
AGENT_IMAGE = "ctrace/agent:fanout-test"
AGENT_NS = "fanout-agents"


def tick_image(cluster: Cluster) -> str:
    """tests/fixtures/src/tick.c built static into an image FROM scratch, loaded on every node."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["gcc", "-static", "-O2", "-fno-omit-frame-pointer", "-o", f"{tmp}/tick", str(SRC / "tick.c")], check=True
        )
        Path(tmp, "Dockerfile").write_text('FROM scratch\nCOPY tick /tick\nENTRYPOINT ["/tick"]\n')
        subprocess.run(["docker", "build", "-q", "-t", TICK_IMAGE, tmp], check=True, capture_output=True)
    cluster.load(TICK_IMAGE)
    return TICK_IMAGE


def agents(cluster: Cluster, namespace: str = AGENT_NS, node: str | None = None) -> None:
    """The DaemonSet of manifests/agent.yaml running this tree's ctrace, in ``namespace`` (the
    run's --agent-namespace: the tests' agents stay apart from ctrace-system's), on every node
    or on ``node`` only. The image is tagged by its content, so a changed tree rolls the
    DaemonSet and an unchanged one leaves the warm agents as they are."""
    image = _agent_image(cluster)
    (ds,) = [d for d in yaml.safe_load_all((ROOT / "manifests" / "agent.yaml").read_text()) if d]
    ds["metadata"]["namespace"] = namespace
    spec = ds["spec"]["template"]["spec"]
    spec.pop("serviceAccountName", None)  # the agent reads no API: CRI metadata on its node
    spec["containers"][0]["image"] = image
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    cluster.kubectl("create", "namespace", namespace, check=False)
    cluster.apply(json.dumps(ds))
    want = 1 if node else len(cluster.json("get", "nodes")["items"])

    def ready() -> bool:  # rollout status returned while the last node's old agent was still replaced
        got = cluster.json("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=ctrace-agent")["items"]
        fresh = [
            p
            for p in got
            if p["spec"]["containers"][0]["image"] == image
            and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        return len(fresh) == want == len(got)

    assert wait_until(ready, 240, step=1.0), cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout


def _agent_image(cluster: Cluster) -> str:
    built = subprocess.run([str(ROOT / "hack" / "agent-image.sh"), AGENT_IMAGE], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-3000:]
    ident = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", AGENT_IMAGE], capture_output=True, text=True, check=True
    ).stdout.strip()
    image = f"{AGENT_IMAGE}-{ident.removeprefix('sha256:')[:12]}"
    subprocess.run(["docker", "tag", AGENT_IMAGE, image], check=True)
    cluster.load(image)
    return image


def deployment(name: str, namespace: str, replicas: int, rate: int) -> str:
    """A Deployment of tick, spread over the nodes (one per node while there are free nodes)."""
    labels = {"app": name}
    spread = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
    doc = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "topology": "spread"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "topologySpreadConstraints": [{**spread, "labelSelector": {"matchLabels": labels}}],
                    "containers": [
                        {"name": "tick", "image": TICK_IMAGE, "imagePullPolicy": "Never", "args": [str(rate)]}
                    ],
                },
            },
        },
    }
    return json.dumps(doc)


def pods(cluster: Cluster, namespace: str, selector: str) -> dict[str, dict[str, Any]]:
    got = cluster.json("get", "pods", "-n", namespace, "-l", selector)
    return {p["metadata"]["name"]: p for p in got["items"]}


def bpftrace_on(cluster: Cluster, namespace: str = AGENT_NS) -> dict[str, list[int]]:
    """bpftrace processes started by the agents of ``namespace``, by node: every process in an
    agent pod's cgroup (cgroup v1: .../kubepods/<qos>/pod<UID>/...) whose comm is bpftrace.
    Other agents on the same nodes (another namespace's) run bpftrace too: not these runs'."""
    agents = cluster.json("get", "pods", "-n", namespace)["items"]
    by_uid = {f"pod{p['metadata']['uid']}": p["spec"]["nodeName"] for p in agents}
    found: dict[str, list[int]] = {node: [] for node in by_uid.values()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            if comm != "bpftrace":
                continue
            cgroup = (entry / "cgroup").read_text()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        pod = next((part for part in cgroup.split("/") if part in by_uid), None)
        if pod and state != "Z":
            found[by_uid[pod]].append(int(entry.name))
    return found


def wait_until(check: Callable[[], Any], timeout: float, step: float = 0.2) -> Any:
    until = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > until:
            return got
        time.sleep(step)


class Client:
    """`ctrace target ... --run` as a user runs it, its lines kept with the time each came."""

    def __init__(self, kubeconfig: Path, *args: str) -> None:
        cmd = [sys.executable, "-m", "ctrace", "target", *args, "--run", "--kubeconfig", str(kubeconfig)]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True
        )
        self.out: list[tuple[float, str]] = []
        self.err: list[tuple[float, str]] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream: Any, into: list[tuple[float, str]]) -> None:
        for line in stream:
            into.append((time.monotonic(), line.rstrip("\n")))

    def lines(self, which: str = "out") -> list[str]:
        return [line for _, line in (self.out if which == "out" else self.err)]

    def first(self, pred: Callable[[str], bool], which: str = "out", timeout: float = 30) -> float | None:
        """The time the first line matching ``pred`` came, waiting up to ``timeout``."""

        def found() -> float | None:
            return next((t for t, line in list(self.out if which == "out" else self.err) if pred(line)), None)

        return wait_until(found, timeout)  # type: ignore[no-any-return]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def text(self) -> str:
        return "\n".join(self.lines("out") + ["--- stderr"] + self.lines("err"))
