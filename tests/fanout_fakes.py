"""Captured pod JSON and a loopback agent that speaks PROTOCOL.md, for the fan-out's unit tests.

The agent here replays a captured event stream; the real ``ctrace agent`` is tested on the
real cluster (tests/test_fanout_cluster.py). The API side is ctrace's own seam (the methods
of resolvers.kubernetes.Api that the fan-out calls), not the kubernetes client's."""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from ctrace.agent import protocol


def pod(
    name: str,
    node: str,
    uid: str,
    cid: str = "c1",
    ready: bool = True,
    phase: str = "Running",
    namespace: str = "default",
    deleting: bool = False,
    owner: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid, "labels": labels or {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-06T05:00:00Z"
    if owner:
        meta["ownerReferences"] = [{"kind": "DaemonSet", "name": owner, "controller": True, "uid": "ds"}]
    return {
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "tick"}]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {"name": "app", "containerID": f"containerd://{cid}", "state": {"running": {}}, "ready": ready}
            ],
        },
    }


def uid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


class Agent:
    """One agent pod's listener: replays ``events`` per run (per-call actions), then waits for "stop" (or ends
    by itself after ``end_after`` events when set), sends the aggregate and "end"."""

    def __init__(self, node: str, version: str = protocol.VERSION, refuse: str | None = None) -> None:
        self.node, self.version, self.refuse = node, version, refuse
        self.events: list[protocol.Event] = []
        self.rows: list[protocol.Row] = []
        self.end_after: tuple[int, str] | None = None  # (code, reason): end without a stop
        self.runs: list[protocol.Run] = []
        self.pings: list[float] = []
        self.stops = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            conn.sendall(protocol.encode(protocol.Hello(self.version, self.node)))
            run = protocol.decode_client(reader.readline())
            assert isinstance(run, protocol.Run)
            self.runs.append(run)
            if self.refuse or self.version != protocol.VERSION:
                conn.sendall(protocol.encode(protocol.Error(self.refuse or "version mismatch", None)))
                return
            conn.sendall(protocol.encode(protocol.Started((41,), ("pid 41 = app",))))
            per_call = run.request.action in protocol.PER_CALL  # events as they come, else one aggregate
            for e in self.events if per_call else ():
                conn.sendall(protocol.encode(e._replace(pod=run.request.pod)))
            if self.end_after is None:
                self._until_stop(reader)
            rows = tuple(r._replace(pod=run.request.pod, namespace=run.request.namespace) for r in self.rows)
            if not per_call:
                conn.sendall(protocol.encode(protocol.Aggregate(run.request.action, rows)))
            code, reason = self.end_after or (protocol.STOPPED, "stopped by the client")
            conn.sendall(protocol.encode(protocol.End(code, reason)))

    def _until_stop(self, reader: Any) -> None:
        for line in reader:
            msg = protocol.decode_client(line)
            if isinstance(msg, protocol.Ping):
                self.pings.append(time.monotonic())
            if isinstance(msg, protocol.Stop):
                self.stops += 1
                return

    def close(self) -> None:
        self.server.close()


class Api:
    """The fan-out's view of the API server: pods, a watch fed by the test, agent pods."""

    namespace = "default"

    def __init__(self, pods: list[dict[str, Any]], agents: dict[str, Agent], agent_pods: list[dict[str, Any]]) -> None:
        self.pods, self.agents, self.agent_pods = pods, agents, agent_pods
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.forwards: list[str] = []

    def get_hint(self) -> str:
        return "list them"

    def pod_query(self, target: str) -> tuple[str, str]:
        return "app=web", ""

    def list_pods(self, labels: str, fields: str, namespace: str | None = None) -> tuple[list[Any], str]:
        return (self.agent_pods if namespace == "ctrace-system" else self.pods), "1"

    def watch_pods(self, labels: str, fields: str, version: str, seconds: int) -> Iterator[tuple[str, Any]]:
        while True:
            yield self.events.get()

    def machine_id(self, node: str) -> str | None:
        return None

    def portforward(self, namespace: str, name: str, port: int) -> socket.socket:
        self.forwards.append(f"{namespace}/{name}:{port}")
        return socket.create_connection(("127.0.0.1", self.agents[name].port))
