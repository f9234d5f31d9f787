"""Pods on this node from the runtimes' CRI metadata, when no API server is configured.

``pod/NAME [-n NS] [-c CONTAINER]`` and ``-l SELECTOR`` resolve here when there
is no kubeconfig and no in-cluster config (a node agent without a service
account token, a node debugged over ssh). A pod's containers are the CRI
containers whose annotations name it; its sandbox (pause) is never traced.

Without ``-n`` a pod name is looked up in every namespace (kubectl would use
``default``; on a node the namespace is rarely known): a name in several is an
error listing them. Labels for ``-l`` are a pod's sandbox's: CRI-O's ``Labels``
annotation, containerd's metadata database (``bolt.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from ctrace.errors import EnvironmentProblem, NotFound, UsageError
from ctrace.model import Process
from ctrace.resolvers import pods, runtimes
from ctrace.resolvers.base import Context, Hit

HINT = "pass --kubeconfig (or run in a pod with a service account) to ask the API server"


def resolve(target: str, ctx: Context) -> list[Process]:
    split = pods.split_target(target) if target else None
    if split is None and target and not ctx.k8s.selector:
        split = ("pod", target)
    if split is not None and split[0] != "pod":
        raise EnvironmentProblem(f"{target} needs the API server: its pods are known there, not on the node", HINT)
    seen = runtimes.scan(None, ctx)
    hits, problems = runtimes.find(split[1] if split else "", ctx, seen.monitors)
    chosen = by_name(hits, split[1], ctx) if split else by_selector(hits, ctx.k8s.selector or "", ctx)
    if not chosen:
        if problems and not hits:
            raise problems[0]
        what = f"pod {split[1]!r}" if split else f"pods matching {ctx.k8s.selector!r}"
        raise NotFound(f"no {what} on this node (no kubeconfig or in-cluster config: CRI metadata only)", HINT)
    return runtimes.processes(chosen, (), ctx, seen.monitors)


def by_name(hits: list[Hit], name: str, ctx: Context) -> list[Hit]:
    mine = [h for h in hits if h.pod is not None and h.pod.name == name and h.pod.container != "POD"]
    if ctx.k8s.namespace is not None:
        mine = [h for h in mine if h.pod is not None and h.pod.namespace == ctx.k8s.namespace]
    spaces = sorted({h.pod.namespace for h in mine if h.pod is not None})
    if len(spaces) > 1:
        raise UsageError(f"pod {name!r} is in {len(spaces)} namespaces: {', '.join(spaces)}", "choose one with -n")
    return _container(mine, ctx)


def _container(mine: list[Hit], ctx: Context) -> list[Hit]:
    wanted = ctx.k8s.container
    if wanted is None:
        return mine
    chosen = [h for h in mine if h.pod is not None and h.pod.container == wanted]
    if mine and not chosen:
        names = sorted({h.pod.container for h in mine if h.pod is not None})
        raise UsageError(f"container {wanted!r} is not in the pod (it has {', '.join(names)})", "choose one with -c")
    return chosen


def by_selector(hits: list[Hit], selector: str, ctx: Context) -> list[Hit]:
    """Containers of the pods whose sandbox's labels match (CRI-O keeps them on disk)."""
    test = parse_selector(selector)
    sandboxes = [h for h in hits if h.pod is not None and h.pod.container == "POD"]
    labelled = [h for h in sandboxes if h.labels]
    uids = {h.pod.uid for h in labelled if h.pod is not None and test(dict(h.labels))}
    if not ctx.k8s.all_namespaces and ctx.k8s.namespace is not None:
        uids = {h.pod.uid for h in labelled if h.pod is not None and h.pod.namespace == ctx.k8s.namespace} & uids
    mine = [h for h in hits if h.pod is not None and h.pod.uid in uids and h.pod.container != "POD"]
    return _container(mine, ctx)


def parse_selector(selector: str) -> Callable[[dict[str, str]], bool]:
    """An equality-based label selector (``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, joined by commas)."""
    terms: list[tuple[str, str, str]] = []  # (key, op, value)
    for raw in selector.split(","):
        term = raw.strip()
        if " in " in term or " notin " in term or "(" in term:
            raise UsageError(f"set-based selector {term!r} needs the API server", HINT)
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append((key.strip(), "!=", value.strip()))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append((key.strip(), "=", value.strip()))
        elif term.startswith("!"):
            terms.append((term[1:].strip(), "!", ""))
        elif term:
            terms.append((term, "exists", ""))
    if not terms:
        raise UsageError("the label selector is empty", "e.g. -l app=web")
    return lambda labels: all(_holds(labels, *t) for t in terms)


def _holds(labels: dict[str, str], key: str, op: str, value: str) -> bool:
    if op == "=":
        return labels.get(key) == value
    if op == "!=":
        return labels.get(key) != value
    return (key in labels) == (op == "exists")
