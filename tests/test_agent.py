"""``ctrace agent`` on a loopback port, spoken to with a raw socket, tracing a real pod.

The pod is a CRI container (and its sandbox, the decoy: it runs the same binary) in
a containerd this module starts, with the annotations containerd's CRI plugin
writes: what the agent finds on a node. Every ending of PROTOCOL.md is checked by
listing processes (psutil), never by a return code: after "stop", after the socket
closes, after the client falls silent, no bpftrace of the run is left. What reads
bpftrace's output (events, maps, the attach) runs under each bpftrace of the matrix;
the protocol and lifecycle tests under the machine's own (``host_agent``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from ctrace.agent import protocol as p
from tests.conftest import ROOT, Bpftrace, Built, need, need_bpftrace, run
from tests.test_runtimes import Node, _start_containerd, cri_flags, docker_answers

pytestmark = [pytest.mark.docker, pytest.mark.bpftrace]
P = f"ct21-{os.getpid()}"
NAMESPACE = f"{P}-ns"
POD = f"{P}-web"
UID = "5e0c7a1b-2d3e-4f5a-8b6c-" + secrets.token_hex(6)
NODE = f"{P}-node"


@dataclass(frozen=True)
class Pod:
    pid: int  # the app container's process (host PID)
    decoy: int  # the sandbox's: the same binary, another container
    docker_id: str  # a docker container running the same binary, no CRI metadata: a pod only the API knows


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory, built: Built) -> Iterator[Pod]:
    need_bpftrace()
    need(docker_answers(), "no docker daemon answers (make test starts one)")
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2", "runc"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (hack/setup.sh installs it)")
    tmp = tmp_path_factory.mktemp("agent")
    (tmp / "image").mkdir()
    shutil.copy(built["hello"], tmp / "image" / "hello")
    (tmp / "image" / "Dockerfile").write_text('FROM scratch\nCOPY hello /hello\nENTRYPOINT ["/hello"]\n')
    image = f"{P}/hello:1"
    run(["docker", "build", "-q", "-t", image, str(tmp / "image")], timeout=300)
    run(["docker", "save", "-o", str(tmp / "hello.tar"), image], timeout=300)
    node = Node(tmp, tmp / "hello.tar", image)
    node.cgroups += [f"/{P}", f"/kubepods/besteffort/pod{UID}"]
    try:
        _start_containerd(node)
        decoy = node.ctr_run(secrets.token_hex(32), *cri_flags("POD", POD, NAMESPACE, UID, kind="sandbox"), ns="k8s.io")
        ident = secrets.token_hex(32)
        flags = [*cri_flags("app", POD, NAMESPACE, UID), f"--cgroup=/kubepods/besteffort/pod{UID}/{ident}"]
        app = node.ctr_run(ident, *flags, ns="k8s.io")
        node.docker_run(f"{P}-apionly", "--network", "none", image=image)
        docker_id = run(["docker", "inspect", "-f", "{{.Id}}", f"{P}-apionly"]).stdout.strip()
        yield Pod(app, decoy, docker_id)
    finally:
        node.cleanup()


class Agent:
    """``ctrace agent`` started on a free loopback port, its log in a file."""

    def __init__(self, tmp: Path, bt: Bpftrace, **env: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = tmp / f"agent-{self.port}.log"
        argv = [sys.executable, "-m", "ctrace", "agent", f"--listen=127.0.0.1:{self.port}", *bt.args]
        # No API server unless the test gives one: the machine's own kubeconfig is not this node's.
        env = {**os.environ, "NODE_NAME": NODE, "HOME": str(tmp), "KUBECONFIG": "", **env}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=out, env=env)
        for _ in range(100):
            if "listening on" in self.log.read_text():
                return
            time.sleep(0.1)
        raise AssertionError(f"the agent did not start: {self.log.read_text()}")

    def runs(self) -> int:
        """Runs the agent started (its log says each with its argv)."""
        return self.log.read_text().count(": ctrace target ")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, bpftrace: Bpftrace) -> Iterator[Agent]:
    a = Agent(tmp_path_factory.mktemp("agent-log"), bpftrace)
    yield a
    a.stop()


@pytest.fixture(scope="module")
def host_agent(tmp_path_factory: pytest.TempPathFactory, host_bpftrace: Bpftrace) -> Iterator[Agent]:
    """An agent on the machine's bpftrace, for the protocol and lifecycle tests: what they
    check does not change with bpftrace's version (how events and maps read does: ``agent``)."""
    a = Agent(tmp_path_factory.mktemp("agent-log"), host_bpftrace)
    yield a
    a.stop()


class Client:
    """A raw socket speaking PROTOCOL.md, with a thread that pings every second when asked."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.reader = self.sock.makefile("rb")
        self.pinging = threading.Event()
        self.sent_last = time.monotonic()
        self.lock = threading.Lock()
        threading.Thread(target=self._ping, daemon=True).start()

    def send(self, msg: p.Message | bytes) -> None:
        with self.lock:
            self.sock.sendall(msg if isinstance(msg, bytes) else p.encode(msg))
            self.sent_last = time.monotonic()

    def _ping(self) -> None:
        while True:
            time.sleep(1)
            if self.pinging.is_set():
                try:
                    self.send(p.Ping())
                except OSError:
                    return

    def read(self) -> p.Message | None:
        line = self.reader.readline()
        return p.decode_agent(line) if line else None

    def until(self, kind: type[p.Message], timeout: float = 60) -> list[p.Message]:
        """Messages up to and including the first of ``kind``."""
        self.sock.settimeout(timeout)
        got: list[p.Message] = []
        while (msg := self.read()) is not None:
            got.append(msg)
            if isinstance(msg, kind):
                return got
        raise AssertionError(f"the connection closed before a {kind.__name__}: {got}")

    def close(self) -> None:
        self.pinging.clear()
        self.sock.close()


def request(action: str = "count", **changes: Any) -> p.Run:
    return p.Run(p.VERSION, p.Request(NAMESPACE, POD, UID, ("hello",), action)._replace(**changes))


def raw(**changes: Any) -> str:
    """A run line with ``changes`` to its request, as JSON (fields the records would not take)."""
    line = json.loads(p.encode(request()))
    line["request"].update(changes)
    return json.dumps(line)


def started(agent: Agent, msg: p.Run) -> tuple[Client, list[p.Message]]:
    c = Client(agent.port)
    hello = c.read()
    assert hello == p.Hello(p.VERSION, NODE)
    c.send(msg)
    c.pinging.set()
    return c, c.until(p.Started)


def tracers(pod: Pod) -> list[psutil.Process]:
    """Processes of a trace of the pod: a bpftrace whose program names the pod's mount namespace
    (the container binding) or its process's root."""
    marks = (f"/proc/{pod.pid}/root", f"[{os.stat(f'/proc/{pod.pid}/ns/mnt').st_ino}]")
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        line = " ".join(proc.info["cmdline"] or ())
        if "bpftrace" in line and any(m in line for m in marks):
            found.append(proc)
    return found


def gone_within(pod: Pod, agent: Agent, seconds: float) -> float:
    """Seconds until no process of a trace is left (zombies included) and the agent has no child."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if not tracers(pod) and not psutil.Process(agent.proc.pid).children(recursive=True):
            return time.monotonic() - start
        time.sleep(0.1)
    left = [(t.pid, t.info["status"], " ".join(t.info["cmdline"] or ())[:120]) for t in tracers(pod)]
    raise AssertionError(f"still running after {seconds} s: {left}")


def test_stop_sends_the_aggregate_and_end_and_leaves_nothing(pod: Pod, agent: Agent) -> None:
    c, first = started(agent, request("count"))
    assert isinstance(first[-1], p.Started) and first[-1].pids == (pod.pid,)
    assert any(f"pod {NAMESPACE}/{POD}" in line for line in first[-1].legend)
    began = time.monotonic()
    time.sleep(3)
    c.send(p.Stop())
    stopped = time.monotonic()
    rest = c.until(p.End, timeout=5)
    took = time.monotonic() - began
    end = rest[-1]
    assert end == p.End(p.STOPPED, "stopped by the client")
    (agg,) = [m for m in rest if isinstance(m, p.Aggregate)]
    (row,) = agg.rows  # the sandbox runs hello too: bound to the app's container, it is not counted
    assert (row.pid, row.func, row.node, row.namespace, row.pod, row.container) == (
        pod.pid,
        "hello",
        NODE,
        NAMESPACE,
        POD,
        "app",
    )
    # hello runs ten times a second: the count is the time the probe was attached, give or take.
    assert row.calls is not None and 10 * 2 <= row.calls <= 10 * took + 3, (row.calls, took)
    assert time.monotonic() - stopped < 5
    gone_within(pod, agent, 5)
    c.close()


def test_per_call_events_are_labelled_as_they_happen(pod: Pod, agent: Agent) -> None:
    c, _ = started(agent, request("stack"))
    events = [m for m in c.until(p.Event, timeout=10) if isinstance(m, p.Event)]
    seen = time.monotonic()
    events += [m for m in c.until(p.Event, timeout=2) if isinstance(m, p.Event)]
    assert time.monotonic() - seen < 1  # the next call's event a tenth of a second later, not at the end
    for e in events:
        assert (e.pid, e.func, e.node, e.namespace, e.pod, e.container) == (
            pod.pid,
            "hello",
            NODE,
            NAMESPACE,
            POD,
            "app",
        )
        assert e.frames and e.frames[0].startswith("hello") and any(f.startswith("main") for f in e.frames)
    c.send(p.Stop())
    assert c.until(p.End, timeout=5)[-1].code == p.STOPPED
    gone_within(pod, agent, 5)
    c.close()


def test_a_closed_connection_ends_the_run(pod: Pod, host_agent: Agent) -> None:
    c, _ = started(host_agent, request("stacks"))
    c.close()
    gone_within(pod, host_agent, 10)


def test_a_silent_client_ends_the_run(pod: Pod, host_agent: Agent) -> None:
    c, _ = started(host_agent, request("count"))
    c.pinging.clear()
    time.sleep(0.2)  # a ping being sent as pinging stopped
    silent_since = c.sent_last
    gone_at = time.monotonic() + gone_within(pod, host_agent, 15)
    assert gone_at - silent_since < 10  # gone within 10 s of the last line the client sent
    assert gone_at - silent_since > p.SILENCE - 0.5  # and not before the client fell silent
    c.close()


def test_version_mismatch_is_one_error(pod: Pod, host_agent: Agent) -> None:
    before = host_agent.runs()
    c = Client(host_agent.port)
    assert isinstance(c.read(), p.Hello)
    c.send(p.Run("0.0.1", request().request))
    msgs = [m for m in iter(c.read, None)]
    assert len(msgs) == 1 and isinstance(msgs[0], p.Error)
    assert msgs[0].message == p.version_mismatch("0.0.1", p.VERSION, NODE)
    assert host_agent.runs() == before
    c.close()
    # A newer client's request, with a field this version does not know: still the version's line.
    c = Client(host_agent.port)
    assert isinstance(c.read(), p.Hello)
    newer = json.loads(raw(trace_id="x"))
    c.send(json.dumps({**newer, "version": "9.0.0"}).encode() + b"\n")
    (error,) = list(iter(c.read, None))
    assert isinstance(error, p.Error) and error.message == p.version_mismatch("9.0.0", p.VERSION, NODE)
    c.close()


HOSTILE = {
    "shell metacharacters": raw(functions=["hello; touch /tmp/x"]),
    "--unsafe in a field": raw(lib="--unsafe"),
    "--unsafe as a function": raw(functions=["--unsafe"]),
    "an unknown field": raw(unsafe=True),
    "a program": raw(program='uprobe:$path:hello { printf("x\\n"); }', functions=[]),
    "not JSON": "$(reboot)",
}


@pytest.mark.parametrize("line", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_requests_run_nothing(pod: Pod, host_agent: Agent, line: str) -> None:
    before = host_agent.runs()
    c = Client(host_agent.port)
    assert isinstance(c.read(), p.Hello)
    c.send(line.rstrip("\n").encode() + b"\n")
    msgs = [m for m in iter(c.read, None)]
    assert len(msgs) == 1 and isinstance(msgs[0], p.Error), msgs
    assert host_agent.runs() == before
    assert not psutil.Process(host_agent.proc.pid).children(recursive=True)
    c.close()


def test_a_pod_not_on_this_node_and_a_replaced_pod(pod: Pod, host_agent: Agent) -> None:
    for msg, said in (
        (request()._replace(request=request().request._replace(pod=f"{P}-elsewhere")), "does not run on node"),
        (request()._replace(request=request().request._replace(pod_uid="0" * 8 + UID[8:])), "it was replaced"),
        (request()._replace(request=request().request._replace(container="sidecar")), "does not run in pod"),
    ):
        c = Client(host_agent.port)
        assert isinstance(c.read(), p.Hello)
        c.send(msg)
        (error,) = [m for m in iter(c.read, None)]
        assert isinstance(error, p.Error) and said in error.message, error
        c.close()


def test_a_program_where_the_daemonset_allows_it(
    pod: Pod, bpftrace: Bpftrace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    allowing = Agent(tmp_path_factory.mktemp("agent-programs"), bpftrace, CTRACE_AGENT_ALLOW_PROGRAMS="1")
    try:
        prog = 'BEGIN { printf("pid %d\\n", $container_pid); } uprobe:$path:hello { @calls[pid] = count(); }'
        c, first = started(allowing, request(functions=(), program=prog, duration=3.0))
        assert isinstance(first[0], p.Started)  # before any line the program prints
        msgs = first + c.until(p.End, timeout=30)
        texts = [m.text for m in msgs if isinstance(m, p.Event) and m.text is not None]
        assert all(m.node == NODE for m in msgs if isinstance(m, p.Event))
        assert f"pid {pod.pid}" in texts
        # Bound to the app's container: the sandbox (the decoy) runs hello too, and is not counted.
        counted = [t for t in texts if t.startswith("@calls[")]
        assert len(counted) == 1 and counted[0].startswith(f"@calls[{pod.pid}]: "), texts
        assert msgs[-1] == p.End(p.OK, "ended")
        c.close()
        pwned = tmp_path_factory.mktemp("pwned") / "x"
        c, _ = Client(allowing.port), None
        assert isinstance(c.read(), p.Hello)
        c.send(request(functions=(), program=f'uprobe:$path:hello {{ system("touch {pwned}"); }}'))
        c.pinging.set()
        end = c.until(p.End, timeout=30)[-1]
        assert isinstance(end, p.End) and end.code == 1 and "unsafe function" in end.reason, end
        assert not pwned.exists()  # never --unsafe: bpftrace refused system()
        c.close()
        gone_within(pod, allowing, 5)
    finally:
        allowing.stop()


def test_a_pod_the_runtimes_do_not_name_is_found_through_the_api(
    pod: Pod, host_bpftrace: Bpftrace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With API access the agent takes the API's pod when CRI metadata has none, on its own node only."""
    from tests.k8s_api import ApiServer
    from tests.k8s_api import pod as pod_json

    uid = "6f1d8b2c-3e4f-4a5b-9c6d-" + secrets.token_hex(6)
    server = ApiServer()
    server.pods = [
        pod_json("apionly", NAMESPACE, f"docker://{pod.docker_id}", NODE, containers=("app",), uid=uid),
        pod_json("elsewhere", NAMESPACE, f"docker://{pod.docker_id}", "node-b", containers=("app",), uid=uid),
    ]
    tmp = tmp_path_factory.mktemp("agent-api")
    config = server.kubeconfig(tmp / "config", namespace=NAMESPACE)
    agent = Agent(tmp, host_bpftrace, KUBECONFIG=str(config))
    try:
        docker_pid = int(run(["docker", "inspect", "-f", "{{.State.Pid}}", pod.docker_id]).stdout)
        ask = p.Run(p.VERSION, p.Request(NAMESPACE, "apionly", uid, ("hello",), "count", duration=3.0))
        c, first = started(agent, ask)
        assert isinstance(first[-1], p.Started) and first[-1].pids == (docker_pid,)
        (agg,) = [m for m in c.until(p.End) if isinstance(m, p.Aggregate)]
        (row,) = agg.rows
        assert (row.pid, row.node, row.namespace, row.pod, row.container) == (
            docker_pid,
            NODE,
            NAMESPACE,
            "apionly",
            "app",
        )
        assert row.calls is not None and row.calls >= 10
        c.close()
        # The same container, but the API says the pod runs on another node: not this agent's.
        c = Client(agent.port)
        assert isinstance(c.read(), p.Hello)
        c.send(ask._replace(request=ask.request._replace(pod="elsewhere")))
        (error,) = list(iter(c.read, None))
        assert isinstance(error, p.Error) and "runs on node node-b" in error.message, error
        c.close()
    finally:
        agent.stop()
        server.stop()


def test_an_agent_killed_with_sigkill_leaves_no_trace(
    pod: Pod, host_bpftrace: Bpftrace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Its child gets SIGTERM when the agent dies (PR_SET_PDEATHSIG) and kills its group, bpftrace with it."""
    import ctypes

    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: the orphans come here to be reaped
    doomed = Agent(tmp_path_factory.mktemp("agent-killed"), host_bpftrace)
    c, _ = started(doomed, request("stacks"))
    below = [proc.pid for proc in psutil.Process(doomed.proc.pid).children(recursive=True)]
    assert below and tracers(pod)
    doomed.proc.kill()
    doomed.proc.wait()
    start = time.monotonic()
    while time.monotonic() - start < 10 and (tracers(pod) or any(psutil.pid_exists(pid) for pid in below)):
        for pid in below:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        time.sleep(0.1)
    assert not tracers(pod) and not any(psutil.pid_exists(pid) for pid in below), tracers(pod)
    c.close()


def test_a_broken_line_during_a_run_stops_it(pod: Pod, host_agent: Agent) -> None:
    c, _ = started(host_agent, request("count"))
    c.send(b'{"type": "ping", "then": "rm -rf /"}\n')
    msgs = c.until(p.End, timeout=10)
    errors = [m for m in msgs if isinstance(m, p.Error)]
    assert len(errors) == 1 and "unknown field 'then'" in errors[0].message
    assert msgs[-1] == p.End(
        p.STOPPED, "the client sent what is not the protocol: ping: unknown field 'then' (known: none)"
    )
    gone_within(pod, host_agent, 5)
    c.close()


def test_sigterm_ends_every_run_with_its_aggregate(
    pod: Pod, bpftrace: Bpftrace, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The pod deleted: the kubelet's SIGTERM stops each run as "stop" would, and the agent exits."""
    leaving = Agent(tmp_path_factory.mktemp("agent-term"), bpftrace)
    c, _ = started(leaving, request("count"))
    time.sleep(1)
    leaving.proc.send_signal(signal.SIGTERM)
    msgs = c.until(p.End, timeout=10)
    assert msgs[-1] == p.End(p.STOPPED, "the agent is shutting down")
    (agg,) = [m for m in msgs if isinstance(m, p.Aggregate)]
    assert agg.rows and agg.rows[0].pid == pod.pid
    assert leaving.proc.wait(timeout=10) == 0
    assert not tracers(pod)
    c.close()
