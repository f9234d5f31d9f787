"""What keeps a printed bpftrace program on its target, and only on it.

A uprobe fires in every process that maps the file, so each program carries
a binding: probe blocks to add and a predicate to put on every probe.
The emitter calls ``bind`` for every program it prints.
"""

from __future__ import annotations

from collections.abc import Sequence

from ctrace.model import Process
from ctrace.record import Record

CONTAINER = "container"
PROCESSES = "processes"


class Member(Record):
    """One process of the target, as the binding needs it."""

    pid: int
    mnt_ns: int | None = None  # inode of /proc/PID/ns/mnt, None when unreadable
    label: str = "host process"  # e.g. "docker container web-1 (pod ns/name)"


class Scope(Record):
    """What a program is bound to: a container (all of it) or a set of processes."""

    kind: str  # CONTAINER or PROCESSES
    members: tuple[Member, ...]


class Binding(Record):
    """The pieces of a program that bind it to its scopes."""

    blocks: tuple[str, ...]  # probe blocks added to the program (before the probes)
    predicate: str  # the condition every probe carries, without the slashes
    statement: str  # one sentence saying what the program is bound to, for the output
    pid_option: int | None = None  # the PID for bpftrace -p, when -p may be given at all


def member(proc: Process) -> Member:
    return Member(proc.pid, None, "host process")


def scope(procs: Sequence[Process], container: bool) -> Scope:
    """The scope of a target: its processes, and whether the target names a whole container."""
    return Scope(CONTAINER if container else PROCESSES, tuple(member(p) for p in procs))


def bind(scopes: Sequence[Scope], dialect: object | None = None) -> Binding:
    """The binding of one program to ``scopes`` (several for ``--run --all``)."""
    pids = sorted({m.pid for s in scopes for m in s.members})
    predicate = " || ".join(f"pid == {p}" for p in pids)
    shown = ", ".join(str(p) for p in pids)
    return Binding((), predicate, f"bound to PID {shown}")


def guard(binding: Binding, condition: str) -> str:
    """The binding's predicate and another condition (e.g. ``@start[tid]``), as one predicate."""
    if not binding.predicate:
        return condition
    if not condition:
        return binding.predicate
    return f"({binding.predicate}) && {condition}"


class Part(Record):
    """One target's attach points in a combined program (``--run --all``)."""

    pid: int
    path: str  # the path bpftrace opens, to tell the same file by device and inode
    points: tuple[str, ...]  # ``kind:path:site``, as emit.points makes them
    unsafe: bool = False


def distinct(parts: Sequence[Part]) -> list[str]:
    """The attach points with one per (file, probe kind, site): two PIDs that run one file
    through two paths must not attach it twice, or every event prints twice."""
    seen: set[object] = set()
    out = []
    for part in parts:
        for point in part.points:
            if point not in seen:
                seen.add(point)
                out.append(point)
    return out


def legend(procs: Sequence[Process]) -> list[str]:
    """One line per PID naming its container or pod, printed before ``--run`` output."""
    return [f"PID {p.pid} = {member(p).label}" for p in procs]
