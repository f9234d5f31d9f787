"""PIDs as ctrace's own PID namespace counts them, when that is not the kernel's first one.

A node agent with hostPID on a kind-like node (the node is a container) runs in the node's
PID namespace, one level below the init namespace. ctrace reads the node's /proc there, but
bpftrace's ``pid`` and ``tid`` are not that namespace's numbers: 0.17 gives the init
namespace's (a PID that may name another process in the node's /proc), and 0.23 and 0.27
call get_ns_current_pid_tgid, which fails with -22 for a task of a deeper namespace, a pod's
(bpftrace issue 4384). So a program ctrace writes there reads the number itself: the task's
``struct pid`` ends with ``numbers[]``, one ``struct upid {nr, ns}`` per level, and
``numbers[L]`` is the number in the namespace at level L. bpftrace 0.17 refuses the index
("out of bounds for array of size 0", a flexible array), so the program steps a pointer:
``(struct upid *)(thread_pid + 1) + L`` (``+ 1`` is sizeof(struct pid), where the array
starts). The number is taken only where ``numbers[L].ns`` is ctrace's namespace (its
inode seeded in a map; comparing a kernel value with a number warns "Addrspace mismatch" on
0.27), else it is 0. Measured on 0.17, 0.23 and 0.27 from a child namespace tracing a
grandchild: each gave the PID the middle namespace's /proc shows. One constant L: a chain
of ternaries over several levels makes 0.23 exit without a word.

L is the level of ctrace's namespace, which no /proc file shows (NS_GET_PARENT refuses the
caller's own parent): bpftrace's BEGIN runs in bpftrace, a child of ctrace in its namespace,
so one BEGIN program reads ``curtask->thread_pid->level``, and the inode at that level
proves it. It is kept in the cache directory per namespace: its inode and the start time of
its PID 1 (an inode is reused once a namespace is gone).
"""

from __future__ import annotations

import os

from ctrace.errors import EnvironmentProblem
from ctrace.proc.procfs import INIT_PID_NS, pid_ns, start_time
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import Any

MAP = "@ctrace_pidns"
ISSUE = "bpftrace issue 4384"


class PidNs(Record):
    """ctrace's PID namespace: its inode and its level below the init namespace."""

    inum: int
    level: int


def expression(ns: PidNs, task: str) -> str:
    """The PID (``task`` = ``curtask->group_leader``) or thread ID (``curtask``) of the
    current task in ``ns``; 0 for a task outside it."""
    upid = f"((struct upid *)({task}->thread_pid + 1) + {ns.level})"
    return f"({MAP}[{upid}->ns->ns.inum] ? {upid}->nr : 0)"


def pid_of(ns: PidNs) -> str:
    return expression(ns, "curtask->group_leader")


def tid_of(ns: PidNs) -> str:
    return expression(ns, "curtask")


def seed(ns: PidNs) -> str:
    return f"{MAP}[{ns.inum}] = 1;"


def own() -> int | None:
    """The inode of ctrace's PID namespace when it is not the init namespace, else None.
    /proc/self is ctrace's own process whatever --proc-root says."""
    inum = pid_ns("self")
    return None if inum is None or inum == INIT_PID_NS else inum


DEEPEST = 8  # levels whose namespace BEGIN reads back (the kernel allows 32)


def _probe() -> str:
    """BEGIN printing bpftrace's level and the namespace inode at each level up to DEEPEST
    (constant steps: 0.23 and 0.27 refuse a pointer stepped by a value read at run time)."""
    steps = [f"((struct upid *)(curtask->thread_pid + 1) + {i})->ns->ns.inum" for i in range(DEEPEST + 1)]
    fmt = " ".join(["%u"] * len(steps))
    return f'BEGIN {{ printf("ctrace-level %d {fmt}\\n", curtask->thread_pid->level, {", ".join(steps)}); exit(); }}'


def learn(program: str, inum: int, cache_dir: str | None) -> PidNs:
    """The level of namespace ``inum`` (ctrace's), read by ``program`` (bpftrace) once and cached."""
    store = os.path.join(cache_dir, "pid-namespaces.json") if cache_dir else None
    known = read_cache(store)
    key = f"{inum}:{start_time(1)}"
    if isinstance(known.get(key), int):
        return PidNs(inum, known[key])
    ns = PidNs(inum, _ask(program, inum))
    if store is not None:
        write_cache(store, {**known, key: ns.level})  # read-only: the next run starts bpftrace once more
    return ns


def read_cache(store: str | None) -> dict[str, Any]:
    """A JSON cache file of ctrace's (bpftrace versions, PID namespace levels); {} when absent or torn."""
    import json

    if store is None:
        return {}
    try:
        with open(store, encoding="utf-8") as f:
            known = json.load(f)
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def write_cache(store: str, known: dict[str, Any]) -> None:
    """Replaces the cache file whole (a reader never sees half of it); a read-only cache is skipped."""
    import json

    try:
        os.makedirs(os.path.dirname(store) or ".", exist_ok=True)
        tmp = f"{store}.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(known, f)
        os.replace(tmp, store)
    except OSError:
        pass


def _ask(program: str, inum: int) -> int:
    import re
    import subprocess

    hint = "run ctrace as root where bpftrace runs, or run it in the host's PID namespace"
    try:
        out = subprocess.run([program, "-e", _probe()], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EnvironmentProblem(f"cannot run {program} to read this PID namespace's level: {err}", hint) from err
    found = re.search(r"^ctrace-level ([0-9]+)((?: [0-9]+)+)$", out.stdout, re.M)
    level = int(found[1]) if found is not None else -1
    inums = found[2].split() if found is not None else []
    if not 0 < level < len(inums) or int(inums[level]) != inum:
        said = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentProblem(
            f"ctrace runs in a child PID namespace ({inum}) and {program} could not read its level: {said}", hint
        )
    return level
