"""What ``ps`` and ``ns`` list: every process with its container and pod (the reverse lookup).

The commands hand their arguments here and the result to render; nothing here reads -o.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from ctrace.errors import CtraceError, NotFound, UsageError
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from ctrace.model import Container, Process
    from ctrace.resolvers import Context


def processes(name: str | None, container: str | None, ctx: Context) -> tuple[list[Process], int]:
    """``ctrace ps [NAME] [--container C]``: the processes, with their containers and pods, and
    how many could not be read; an empty list is an error saying why."""
    from ctrace.proc import placement, procfs
    from ctrace.resolvers import host, kubernetes, runtimes

    where = placement.placements(ctx.proc_root)
    hidden = 0
    if container:
        procs = _members(container, ctx)
        if name:
            procs = [p for p in procs if p.pid in set(host.matching_pids(name, ctx))]
    else:
        pids = host.matching_pids(name, ctx) if name else procfs.pids(ctx.proc_root)
        found = [_quiet_process(pid, ctx) for pid in pids]
        hidden = found.count(HIDDEN)
        procs = runtimes.annotate([p for p in found if isinstance(p, tuple)], ctx, where)
    procs = kubernetes.annotate(procs, ctx, where)
    if not procs:
        raise _nothing_listed(name, container, ctx, hidden)
    return procs, hidden


def hidden_warning(hidden: int) -> str:
    return f"warning: {hidden} processes are not listed: {_why_hidden()}\n"


def _members(name: str, ctx: Context) -> list[Process]:
    """``ps --container NAME``; a prefix of several containers gets a hint ps can run
    (the resolver's suggests --all and --runtime, which are target's flags)."""
    from ctrace.resolvers import containers

    try:
        return containers.members(name, ctx)
    except UsageError as err:
        hits = _containers_named(name, ctx)
        if len(hits) < 2:
            raise
        full = hits[0].name or hits[0].id[:12]
        raise UsageError(
            err.message, f"give the full name or ID: '{shlex.join(['ctrace', 'ps', '--container', full])}'"
        ) from None


def _nothing_listed(name: str | None, container: str | None, ctx: Context, hidden: int) -> CtraceError:
    """An empty table is an answer nobody can act on: say why it is empty, and what to run instead."""
    from ctrace.errors import EnvironmentProblem

    if hidden:
        return EnvironmentProblem(f"no process listed: {hidden} processes hidden: {_why_hidden()}")
    if container:
        return NotFound(
            f"container {container!r} runs no process named {name!r}",
            f"list its processes: 'ctrace ps --container {container}'",
        )
    if name and _is_container(name, ctx):
        return NotFound(
            f"no process is named {name!r}, but a container is",
            f"list its processes: 'ctrace ps --container {name}'",
        )
    return NotFound(f"no process named {name!r}", "list every process with 'ctrace ps'")


def _why_hidden() -> str:
    if os.geteuid() != 0:
        return "reading another user's process needs root (run ctrace as root)"
    return "permission denied reading their binary, even as root (a security module or another user namespace)"


def _is_container(name: str, ctx: Context) -> bool:
    return bool(_containers_named(name, ctx))


def _containers_named(name: str, ctx: Context) -> list[Container]:
    """Containers of every runtime that ``name`` names or prefixes (none where no runtime answers)."""
    from ctrace.resolvers import runtimes

    try:
        hits, _ = runtimes.find(name, ctx, runtimes.scan(None, ctx).monitors)
    except CtraceError:
        return []
    return [h.container for h in hits]


def details(procs: Sequence[Process], ctx: Context) -> dict[int, dict[str, object]]:
    """User, start time and resident memory of each process (psutil), for -o wide and json."""
    import psutil

    psutil.PROCFS_PATH = ctx.proc_root
    out: dict[int, dict[str, object]] = {}
    for p in procs:
        try:
            proc = psutil.Process(p.pid)
            with proc.oneshot():
                out[p.pid] = {"user": proc.username(), "started": proc.create_time(), "rss": proc.memory_info().rss}
        except (psutil.Error, OSError, ValueError, IndexError):
            continue  # exited meanwhile, or a --proc-root psutil cannot parse: the table goes without
    return out


def owner(pid: int, ctx: Context) -> Process | None:
    """The process of a PID with its container and pod, for ``ns`` (the reverse lookup);
    None when it cannot be read."""
    from ctrace.proc import placement
    from ctrace.resolvers import kubernetes, runtimes

    proc = _quiet_process(pid, ctx)
    if not isinstance(proc, tuple):
        return None
    found = placement.placement(pid, ctx.proc_root)
    where = {pid: found} if found.container_id else {}
    (proc,) = kubernetes.annotate(runtimes.annotate([proc], ctx, where), ctx, where)
    return proc


HIDDEN = "hidden"  # what _quiet_process returns for a process ctrace may not read


def _quiet_process(pid: int, ctx: Context) -> Process | str | None:
    """A user-space process, HIDDEN when reading it needs more privilege, or None for
    kernel threads and processes that exited."""
    from ctrace.errors import EnvironmentProblem
    from ctrace.resolvers import host

    try:
        return host.process(pid, ctx)
    except EnvironmentProblem:
        return HIDDEN
    except Exception:  # noqa: BLE001 - ps lists what it can read
        return None
