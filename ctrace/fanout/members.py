"""Which pods are traced, where, and through which agent: pure functions over pod JSON."""

from __future__ import annotations

from ctrace.errors import CtraceError
from ctrace.record import TYPE_CHECKING, Record
from ctrace.resolvers import pods

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ctrace.resolvers.pods import PodJSON

AGENT_DAEMONSET = "ctrace-agent"  # manifests/agent.yaml


class Member(Record):
    """One container of one pod, traced through the agent on its node."""

    namespace: str
    name: str
    uid: str
    node: str
    container: str
    container_id: str  # a restart's new container gets a new run

    @property
    def pod(self) -> str:
        return f"{self.namespace}/{self.name}"


def member(pod: PodJSON, container: str | None) -> Member:
    """The member a running pod gives; raises CtraceError naming why it cannot be traced."""
    name, _ = pods.choose_container(pod, container)
    _, cid = pods.container_id(pod, name)
    meta = pod.get("metadata", {})
    node = pod.get("spec", {}).get("nodeName", "")
    return Member(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""), node, name, cid)


def ready(pod: PodJSON) -> bool:
    """Running, Ready, and not being deleted: kubectl's READY column, what a Service routes to."""
    status = pod.get("status", {})
    if status.get("phase") != "Running" or gone(pod):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))


def gone(pod: PodJSON) -> str | None:
    """Why a pod is going or gone (deleted, or finished), else None."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return "deleted"
    phase = pod.get("status", {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        return f"its phase is {phase}"
    return None


def label(pod: PodJSON) -> str:
    meta = pod.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def why_not(pod: PodJSON, container: str | None) -> str | None:
    """Why a listed pod cannot be traced now (None: it can)."""
    reason = gone(pod)
    if reason:
        return reason
    if not ready(pod):
        return f"it is not ready (phase {pod.get('status', {}).get('phase', 'unknown')})"
    if not pod.get("spec", {}).get("nodeName"):
        return "it is not scheduled on a node"
    try:
        member(pod, container)
    except CtraceError as err:
        return err.message
    return None


def agents(items: Iterable[PodJSON], daemonset: str = AGENT_DAEMONSET) -> dict[str, str]:
    """node -> agent pod name, for agent pods owned by the DaemonSet, Running and Ready.

    A pod that only looks like an agent (same labels, not owned by the DaemonSet) is ignored:
    the client would hand it the user's functions and trust what it answers."""
    out: dict[str, str] = {}
    for pod in items:
        meta = pod.get("metadata", {})
        owners = meta.get("ownerReferences", [])
        owned = any(o.get("kind") == "DaemonSet" and o.get("name") == daemonset and o.get("controller") for o in owners)
        node = pod.get("spec", {}).get("nodeName", "")
        if owned and node and ready(pod):
            out.setdefault(node, meta.get("name", ""))
    return out


def is_local(node: str, machine_id: str | None, env_node: str | None, local_machine_id: str | None) -> bool:
    """Whether this machine is ``node``, by identity, never by seeing the pod's PIDs (on a local
    cluster every node shares one kernel, so every pod's PIDs are visible from the host).

    In the agent NODE_NAME is the downward API's spec.nodeName; elsewhere /etc/machine-id
    against the node's status.nodeInfo.machineID."""
    if env_node:
        return env_node == node
    return bool(local_machine_id) and bool(machine_id) and local_machine_id == machine_id
