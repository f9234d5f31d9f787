"""Where a pod's run goes: the agent on its node, found by ownership, reached by port-forward."""

from __future__ import annotations

import os
import threading
import time

from ctrace.agent import protocol
from ctrace.errors import NotTraceable
from ctrace.fanout import members
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers.kubernetes import AGENT_SELECTOR

if TYPE_CHECKING:
    from typing import Any

    from ctrace.fanout.members import Member
    from ctrace.resolvers.kubernetes import Api

FRESH = 2.0  # seconds a listing of the agents is trusted: a new node's agent is found soon after


class Directory:
    """The agent pods of the agent namespace, listed when asked and shortly cached."""

    def __init__(self, api: Api, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self._lock = threading.Lock()
        self._agents: dict[str, str] = {}
        self._when = -FRESH
        self._local: dict[str, bool] = {}

    def agent_on(self, node: str) -> str | None:
        with self._lock:
            if node not in self._agents or time.monotonic() - self._when > FRESH:
                listed, _ = self.api.list_pods(AGENT_SELECTOR, "", self.namespace)
                self._agents, self._when = members.agents(listed), time.monotonic()
            return self._agents.get(node)

    def is_local(self, node: str) -> bool:
        """Whether this machine is the node (NODE_NAME in the agent, else /etc/machine-id)."""
        with self._lock:
            if node not in self._local:
                env = os.environ.get("NODE_NAME")
                theirs = None if env else self.api.machine_id(node)
                self._local[node] = members.is_local(node, theirs, env, _machine_id())
            return self._local[node]

    def connect(self, member: Member) -> tuple[str, Any]:
        """The agent pod that serves ``member``'s node and a socket to it (raises CtraceError naming why not)."""
        agent = self.agent_on(member.node)
        if agent is None:
            raise NotTraceable(
                f"no ready ctrace agent runs on node {member.node} (DaemonSet "
                f"{members.AGENT_DAEMONSET} in namespace {self.namespace})"
            )
        return agent, self.api.portforward(self.namespace, agent, protocol.PORT)


def _machine_id() -> str | None:
    try:
        with open("/etc/machine-id") as f:
            return f.read().strip() or None
    except OSError:
        return None
