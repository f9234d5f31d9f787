"""Pure helpers over Pod and workload JSON as the API server sends it."""

from __future__ import annotations

from ctrace.errors import NotTraceable, UsageError
from ctrace.record import TYPE_CHECKING

# kubectl's resource names and short names for what can be traced.
KINDS = {
    "pod": "pod",
    "pods": "pod",
    "po": "pod",
    "deploy": "deployment",
    "deployment": "deployment",
    "deployments": "deployment",
    "ds": "daemonset",
    "daemonset": "daemonset",
    "daemonsets": "daemonset",
    "sts": "statefulset",
    "statefulset": "statefulset",
    "statefulsets": "statefulset",
}
RUNTIMES = {"docker": "docker", "containerd": "containerd", "cri-o": "cri-o"}
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"


if TYPE_CHECKING:
    from typing import TypedDict

    class Meta(TypedDict, total=False):
        name: str
        namespace: str
        uid: str
        annotations: dict[str, str]
        labels: dict[str, str]
        deletionTimestamp: str
        resourceVersion: str
        ownerReferences: list[dict[str, object]]

    class ContainerSpec(TypedDict, total=False):
        name: str
        image: str

    class PodSpec(TypedDict, total=False):
        nodeName: str
        containers: list[ContainerSpec]

    class ContainerStatus(TypedDict, total=False):
        name: str
        containerID: str
        image: str
        state: dict[str, object]

    class PodStatus(TypedDict, total=False):
        phase: str
        containerStatuses: list[ContainerStatus]
        conditions: list[dict[str, str]]

    class PodJSON(TypedDict, total=False):
        metadata: Meta
        spec: PodSpec
        status: PodStatus

    class Requirement(TypedDict, total=False):
        key: str
        operator: str
        values: list[str]

    class Selector(TypedDict, total=False):
        matchLabels: dict[str, str]
        matchExpressions: list[Requirement]


def split_target(target: str) -> tuple[str, str] | None:
    """('pod', 'x') for 'pod/x', 'po/x', 'deploy/x', ...; None for anything else."""
    kind, sep, name = target.partition("/")
    if not sep or kind.lower() not in KINDS:
        return None
    if not name or "/" in name:
        raise UsageError(f"{target!r} is not KIND/NAME", "e.g. pod/cilium-x7k2p or ds/cilium")
    return KINDS[kind.lower()], name


def selector_string(selector: Selector) -> str:
    """A label selector in the string form the list calls take."""
    parts = [f"{k}={v}" for k, v in sorted(selector.get("matchLabels", {}).items())]
    for req in selector.get("matchExpressions", []):
        key, op, values = req.get("key", ""), req.get("operator", ""), ",".join(req.get("values", []))
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key}.get(op, f"!{key}")
        )
    return ",".join(parts)


def choose_container(pod: PodJSON, wanted: str | None) -> tuple[str, str | None]:
    """The container to trace (kubectl's rule: -c, else the default annotation, else the first)

    and a note when the choice was made for the user among several."""
    names = [c.get("name", "") for c in pod.get("spec", {}).get("containers", [])]
    meta = pod.get("metadata", {})
    if wanted is not None:
        if wanted not in names:
            raise UsageError(
                f"container {wanted!r} is not in pod {meta.get('name')}", f"choose one of: {', '.join(names)}"
            )
        return wanted, None
    default = meta.get("annotations", {}).get(DEFAULT_CONTAINER) or (names[0] if names else "")
    note = f"Defaulted container {default!r} out of: {', '.join(names)}" if len(names) > 1 else None
    return default, note


def container_id(pod: PodJSON, container: str) -> tuple[str, str]:
    """(runtime, id) from the container's status: docker://, containerd:// or cri-o://."""
    meta = pod.get("metadata", {})
    for status in pod.get("status", {}).get("containerStatuses", []):
        if status.get("name") != container:
            continue
        scheme, sep, ident = status.get("containerID", "").partition("://")
        if sep and ident and "running" in status.get("state", {}):
            return RUNTIMES.get(scheme, scheme), ident
    raise NotTraceable(
        f"container {container!r} of pod {meta.get('namespace')}/{meta.get('name')} is not running",
        f"check it with 'kubectl get pod {meta.get('name')} -n {meta.get('namespace')}'",
    )
