"""Where a request's pod runs on this node: its container, from the runtimes' own CRI metadata.

By UID as well as namespace and name: a pod deleted and created again under the
same name (a StatefulSet's) is another pod, and the client asked for the one it
saw. The agent needs no API access for this (the runtimes' state files, read as
every runtime resolver reads them), and it never takes a pod it does not find
here: a pod of another node is that node's agent's, whatever PIDs this one sees.
"""

from __future__ import annotations

from ctrace.errors import NotFound, UsageError
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from ctrace.agent.protocol import Request
    from ctrace.resolvers.base import Context, Hit

WHERE = "kubectl get pod -o wide shows the pod's node; its own agent traces it"


class Placed(Record):
    """The container to trace, named to ``ctrace target`` as exactly as it can be."""

    argv: tuple[str, ...]  # the target and how to resolve it: CONTAINER_ID --runtime R
    namespace: str
    pod: str
    container: str


def find(req: Request, ctx: Context, node: str) -> Placed:
    from ctrace.resolvers import runtimes

    seen = runtimes.scan(None, ctx)
    hits, problems = runtimes.find(req.pod, ctx, seen.monitors)
    named = [h for h in hits if _pod_of(h, req) and h.pod is not None and h.pod.container != "POD"]
    here = f"node {node}" if node else "this node"
    if not named:
        from ctrace.resolvers import kubernetes
        from ctrace.resolvers.base import K8sOptions

        if kubernetes.configured(K8sOptions()):
            return _from_api(req, here, node)
        if problems:
            raise problems[0]
        raise NotFound(f"pod {req.namespace}/{req.pod} does not run on {here}", WHERE)
    same = [h for h in named if h.pod is not None and h.pod.uid == req.pod_uid]
    if not same:
        raise _replaced(req, here, named[0].pod.uid if named[0].pod is not None else "?")
    chosen = _container(same, req)
    pod = chosen.pod
    assert pod is not None
    c = chosen.container
    return Placed((c.id, "--runtime", c.runtime), pod.namespace, pod.name, pod.container)


def _replaced(req: Request, here: str, uid: str) -> NotFound:
    return NotFound(
        f"pod {req.namespace}/{req.pod} on {here} has UID {uid}, not {req.pod_uid}: it was replaced",
        "run the command again: it finds the pods as they are now",
    )


def _from_api(req: Request, here: str, node: str) -> Placed:
    """Where the runtimes' metadata does not name the pod (a layout ctrace cannot read), the
    API server's word, with the agent's service account: the pod's node must be this one."""
    from ctrace.resolvers import kubernetes, pods
    from ctrace.resolvers.base import K8sOptions

    (found,) = kubernetes.Api(K8sOptions(namespace=req.namespace)).find_pods(f"pod/{req.pod}")
    uid, where = found.get("metadata", {}).get("uid", ""), found.get("spec", {}).get("nodeName", "")
    if uid != req.pod_uid:
        raise _replaced(req, here, uid)
    if where != node:
        raise NotFound(f"pod {req.namespace}/{req.pod} runs on node {where}, not on {here}", WHERE)
    name, _ = pods.choose_container(found, req.container)
    target = (f"pod/{req.pod}", f"--namespace={req.namespace}", f"--container={name}", "--runtime", "k8s")
    return Placed(target, req.namespace, req.pod, name)


def _pod_of(hit: Hit, req: Request) -> bool:
    return hit.pod is not None and (hit.pod.namespace, hit.pod.name) == (req.namespace, req.pod)


def _container(hits: list[Hit], req: Request) -> Hit:
    names = sorted({h.pod.container for h in hits if h.pod is not None})
    wanted = req.container or (names[0] if len(names) == 1 else None)
    if wanted is None:
        raise UsageError(
            f"pod {req.namespace}/{req.pod} has containers {', '.join(names)}", "choose one (kubectl's -c CONTAINER)"
        )
    chosen = [h for h in hits if h.pod is not None and h.pod.container == wanted]
    if not chosen:
        raise NotFound(
            f"container {wanted!r} does not run in pod {req.namespace}/{req.pod} (it runs {', '.join(names)})",
            "choose one of those (kubectl's -c CONTAINER)",
        )
    return chosen[0]
