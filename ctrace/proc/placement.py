"""Which container (and pod) a process is in: its runtime's monitor above it, else its cgroup.

Kept apart from procfs (pure parsers and thin readers): a placement walks the
process tree (monitors.Tree) and reads cgroup paths (cgroups).
"""

from __future__ import annotations

from ctrace.errors import CtraceError
from ctrace.proc.procfs import PROC, parse_cgroup, pids, read_bytes, read_text
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from ctrace.proc import cgroups, monitors


def placement(pid: int, proc_root: str = PROC, tree: monitors.Tree | None = None) -> cgroups.Placement:
    """The container (and pod) a process is in: its runtime's monitor above it, else its cgroup path.

    A containerd shim or a conmon is an ancestor of every process of a container
    (the shim is a subreaper), so walking up the parents names the runtime, the
    bundle and, for a runtime inside another container (a kind node), every level.
    The cgroup path adds the pod UID, and is the answer when no monitor is seen.
    """
    from ctrace.proc import cgroups  # its regular expressions are compiled at import: only when asked
    from ctrace.proc.monitors import Tree

    paths = parse_cgroup(read_text(pid, "cgroup", proc_root))
    guess = cgroups.placement(paths)
    levels = (tree or Tree.of(proc_root)).levels(pid, paths)
    if not levels:
        return guess
    inner = levels[-1]
    pod = guess.pod_uid if guess.container_id in (None, inner.container_id) else None
    return inner._replace(pod_uid=pod or guess.pod_uid, outer=tuple(levels[:-1]))


def placements(proc_root: str = PROC, wanted: tuple[bytes, ...] | None = None) -> dict[int, cgroups.Placement]:
    """Host PID -> container, for every process in a container (one pass over /proc).

    ``wanted``: only processes whose cgroup file mentions one of these (container
    IDs): a substring test is far cheaper than a placement of every process.
    """
    from ctrace.proc.monitors import Tree

    out = {}
    tree = Tree.of(proc_root)
    for pid in pids(proc_root):
        if wanted is not None:
            raw = read_bytes(f"{proc_root}/{pid}/cgroup")
            if raw is None or not any(w in raw for w in wanted):
                continue
        try:
            found = placement(pid, proc_root, tree)
        except CtraceError:
            continue
        if found.container_id:
            out[pid] = found
    return out
