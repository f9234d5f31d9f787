"""A name: a process, a container of any runtime, or a pod on this node; the precedence between them.

Precedence, stated and tested (tests/test_runtimes.py):

1. An exact name beats a prefix. Exact is a process called the name (comm,
   exe or argv[0]), a container whose name or full ID it is, or a pod on this
   node (CRI metadata) whose name it is. With a process named ``orders`` and
   containers ``orders-1`` and ``orders-2``, ``orders`` is the process.
2. Every exact match is taken: a container and the processes in it called the
   same are one target per process.
3. Two runtimes with a container of that exact name is an error that lists
   both; ``--runtime`` chooses.
4. Without an exact match, a prefix of one container's name or ID (4 hex
   digits at least) is that container; of several, an error listing them,
   unless ``--all``.
"""

from __future__ import annotations

import re

from ctrace.errors import NotFound, UsageError
from ctrace.model import Process
from ctrace.resolvers import runtimes
from ctrace.resolvers.base import Context, Hit

NAME = "container"
_NAME = re.compile(r"[^\s/:][^\s/]*\Z")  # no runtime's names hold spaces or slashes


def claims(target: str, ctx: Context) -> bool:
    return _NAME.match(target) is not None and not target.isdigit()


def resolve(target: str, ctx: Context, only: str | None = None) -> list[Process]:
    seen = runtimes.scan(target, ctx)
    hits, problems = runtimes.find(target, ctx, seen.monitors, only)
    chosen = pick(target, hits, bool(seen.named), ctx.all_matches)
    found = runtimes.processes(chosen, seen.named, ctx, seen.monitors)
    if only is not None:
        found = [p for p in found if p.runtime == only]
    if found:
        if problems and not chosen:
            note = f"{problems[0].message}; matched process names only, and its container names are unknown"
            return [p._replace(notes=(*p.notes, note)) for p in found]
        return found
    if problems and not hits:
        raise problems[0]
    where = f"{only} container" if only else "container"
    raise NotFound(
        f"no process named {target!r}, and no {where}", f"list processes with 'ctrace ps'; {runtimes.list_hint()}"
    )


def pick(target: str, hits: list[Hit], process_named: bool, take_all: bool) -> list[Hit]:
    """The containers a name means, by the precedence above."""
    exact = [h for h in hits if h.exact and not h.by_pod]
    kinds = sorted({h.container.runtime for h in exact})
    if len(kinds) > 1:
        raise UsageError(
            f"{target!r} names containers of {len(kinds)} runtimes: {', '.join(runtimes.label(h) for h in exact)}",
            "choose one with " + " or ".join(f"--runtime {k}" for k in kinds),
        )
    if exact:
        return exact
    pods = [h for h in hits if h.exact]
    if pods:
        return pods
    if process_named:
        return []  # an exact process name beats a prefix of container names
    if len(hits) > 1 and not take_all:
        raise UsageError(
            f"{target!r} matches {len(hits)} containers: {', '.join(runtimes.label(h) for h in hits)}",
            "give the full name or ID, pass --all to trace them all, or --runtime host for processes of that name",
        )
    return hits


class Only:
    """The resolver ``--runtime NAME`` chooses: containers of that runtime alone."""

    def __init__(self, runtime: str) -> None:
        self.NAME = runtime

    def claims(self, target: str, ctx: Context) -> bool:
        return claims(target, ctx)

    def resolve(self, target: str, ctx: Context) -> list[Process]:
        return resolve(target, ctx, self.NAME)


def members(name: str, ctx: Context) -> list[Process]:
    """``ctrace ps --container NAME``: the processes of one container of any runtime."""
    seen = runtimes.scan(None, ctx)
    hits, problems = runtimes.find(name, ctx, seen.monitors)
    chosen = pick(name, hits, False, take_all=False)
    if not chosen:
        if problems and not hits:
            raise problems[0]
        raise NotFound(f"no running container named {name!r}", runtimes.list_hint())
    return runtimes.processes(chosen, (), ctx, seen.monitors)
