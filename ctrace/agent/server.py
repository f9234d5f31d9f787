"""``ctrace agent``: the node agent's server, PROTOCOL.md's requests only.

It listens on loopback in its pod's network namespace (127.0.0.1:7117): the client
reaches it through the API server's pods/portforward, and nothing on the node's
network can. Each connection is one run (session.py), in a thread of its own. The
agent is a child subreaper: a trace whose ctrace died leaves its bpftrace to the
agent, which reaps it (PID 1 of a hostPID pod is the node's, and may not).
SIGTERM (the pod deleted) stops every run as "stop" would and waits for their ends.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading

from ctrace.agent import protocol as p
from ctrace.agent.session import Config, serve
from ctrace.errors import EnvironmentProblem, UsageError
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

PR_SET_CHILD_SUBREAPER = 36
MAX_DURATION = 3600.0
ALLOW = "CTRACE_AGENT_ALLOW_PROGRAMS"


def listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text!r} is not HOST:PORT", f"e.g. --listen 127.0.0.1:{p.PORT}")
    return host.strip("[]"), int(port)


def config(args: argparse.Namespace) -> Config:
    if args.max_duration <= 0 or args.max_runs < 1:
        raise UsageError("--max-duration and --max-runs must be positive")
    return Config(
        node=os.environ.get("NODE_NAME", "") or os.uname().nodename,
        allow_programs=os.environ.get(ALLOW, "") == "1",
        bpftrace=args.bpftrace,
        proc_root=args.proc_root.rstrip("/") or "/",
        max_duration=args.max_duration,
        max_runs=args.max_runs,
        shutdown=threading.Event(),
        active=set(),
    )


def serve_forever(args: argparse.Namespace) -> int:
    host, port = listen_address(args.listen)
    conf = config(args)
    try:
        listener = socket.create_server((host, port))
    except OSError as err:
        raise EnvironmentProblem(f"cannot listen on {host}:{port}: {err.strerror}", "choose another --listen") from err
    _subreaper()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: conf.shutdown.set())
    programs = "allowed" if conf.allow_programs else f"refused (set {ALLOW}=1 to allow)"
    sys.stderr.write(f"ctrace agent {p.VERSION} on node {conf.node}: listening on {host}:{port}; programs {programs}\n")
    sys.stderr.flush()
    sessions: list[threading.Thread] = []
    listener.settimeout(0.5)
    with listener:
        while not conf.shutdown.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                reap(conf)
                continue
            except InterruptedError:
                continue
            thread = threading.Thread(target=serve, args=(sock, conf), daemon=True)
            thread.start()
            sessions = [t for t in sessions if t.is_alive()] + [thread]
    for thread in sessions:
        thread.join(timeout=p.STOP_GRACE + 20)
    return 0


def check(args: argparse.Namespace) -> int:
    """``ctrace agent --check``: the readiness probe. An agent answers on --listen with the
    hello of this very version (a rollout half done is not ready)."""
    host, port = listen_address(args.listen)
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            line = sock.makefile("rb").readline(p.MAX_LINE + 1)
    except OSError as err:
        raise EnvironmentProblem(
            f"no agent answers on {host}:{port}: {err.strerror or err}", "is the agent (ctrace agent) up?"
        ) from err
    hello = p.decode_agent(line)
    if not isinstance(hello, p.Hello):
        raise EnvironmentProblem(f"the agent on {host}:{port} said {p.TYPE_OF[type(hello)]}, not hello")
    mismatch = p.version_mismatch(p.VERSION, hello.version, hello.node)
    if mismatch is not None:
        raise EnvironmentProblem(mismatch, "restart the agent's pod")
    return 0


def _subreaper() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap(conf: Config) -> None:
    """Reap orphans the agent inherited; its sessions' own children are theirs to wait for."""
    me = os.getpid()
    for name in os.listdir(conf.proc_root):
        if not name.isdigit() or int(name) in conf.active:
            continue
        try:
            with open(f"{conf.proc_root}/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[0] == b"Z" and int(fields[1]) == me:
            try:
                os.waitpid(int(name), os.WNOHANG)
            except ChildProcessError:
                pass
