"""What keeps a printed bpftrace program on its target, and only on it.

A uprobe fires in every process that maps the file: a replica of the same
image, every user of a shared library. So every program ctrace prints carries
a binding, the same on every bpftrace version (measured on 0.17, 0.23, 0.27):

- a container (a container or pod named as the target) is its mount namespace:
  ``@ctrace_mntns[curtask->nsproxy->mnt_ns->ns.inum]``, read through BTF, seeded
  in BEGIN. Every process of the container shares it, those forked after attach
  too, and no replica or host process does (what Inspektor Gadget filters on;
  the cgroup id would need cgroup v2, which not every host runs). A map lookup,
  not ``==``: bpftrace 0.27 warns "Addrspace mismatch" comparing a kernel value
  with a number in a uprobe.
- a set of processes is a map of PIDs, seeded in BEGIN, which
  ``tracepoint:sched:sched_process_fork`` extends with each child and
  ``sched_process_exit`` prunes, so a PID reused later is not admitted.
- a container whose mount namespace cannot tell it apart (no BTF, or it is the
  host's) is bound as the set of its processes.
- a program on one process (or on a container through its init) stops when that
  process exits, as ``bpftrace -p`` did.

``-p PID`` is no binding: bpftrace 0.17 ignores it for uprobes, and from 0.20
(bpftrace PR #2830) it limits them to PID's own threads, leaving out every child
forked after attach and the container's other processes. So programs carry the
predicate and no ``-p``, but where the path itself needs it (a path inside the
process's mount namespace), and then the statement says what -p adds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

from ctrace.bpftrace import pidns
from ctrace.model import Process
from ctrace.proc.procfs import mount_ns
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import Protocol

    class Facts(Protocol):
        """What the binding asks of the bpftrace that runs it (ctrace/bpftrace/dialect.py's Dialect)."""

        @property
        def pid_filters_uprobes(self) -> bool: ...

        @property
        def pidns(self) -> pidns.PidNs | None: ...

        def delete(self, element: str) -> str: ...


CONTAINER = "container"
PROCESSES = "processes"
BTF = "/sys/kernel/btf/vmlinux"
PIDS = "@ctrace_pids"
KIDS = "@ctrace_kids"  # in a child PID namespace: children forked after attach, by the kernel's PID
MNTNS = "@ctrace_mntns"
MNTNS_OF_TASK = "curtask->nsproxy->mnt_ns->ns.inum"
# A block without braces inside: BEGIN and END of the programs ctrace writes.
_BLOCK = {name: re.compile(rf"(?:\A|\s)\b{name} \{{ ([^{{}}]*?) ?\}}") for name in ("BEGIN", "END")}


class Member(Record):
    """One process of the target, as the binding needs it."""

    pid: int
    mnt_ns: int | None = None  # inode of /proc/PID/ns/mnt, None when unreadable
    label: str = "host process"  # e.g. "docker container web-1 (pod ns/name)"
    init: bool = False  # its container's init process: the container ends with it


class Scope(Record):
    """What a program is bound to: a container (all of it) or a set of processes."""

    kind: str  # CONTAINER or PROCESSES
    members: tuple[Member, ...]
    name: str = ""  # the container's label, for the statement
    mnt_ns: tuple[int, ...] = ()  # a container's own mount namespaces, when they tell it apart


class Binding(Record):
    """The pieces of a program that bind it to its scopes (``program`` puts them together).

    bpftrace 0.17 takes one BEGIN and one END block, so the binding gives statements
    for them, not blocks."""

    begin: tuple[str, ...]  # statements for the program's BEGIN block
    blocks: tuple[str, ...]  # probe blocks that go before the program's probes
    predicate: str  # the condition every probe carries, without the slashes
    statement: str  # one sentence saying what the program is bound to, for the output
    pid_option: int | None = None  # the PID for bpftrace -p, when -p may be given at all
    end: tuple[str, ...] = ()  # statements for the END block: clear the binding's maps
    pid: str = "pid"  # the traced process's PID as ctrace's /proc names it, for what actions print and key
    tid: str = "tid"  # a thread's key (latency's start stamp), never printed


def label(proc: Process) -> str:
    """The container or pod of a process, as a legend names it."""
    c = proc.container
    if proc.pod is not None:
        pod = f"pod {proc.pod.namespace}/{proc.pod.name}"
        return f"{c.runtime} container {proc.pod.container} ({pod})" if c else pod
    if c is None:
        return "host process"
    return f"{c.runtime} container {c.name or c.id[:12]}"


def member(proc: Process, proc_root: str = "/proc") -> Member:
    return Member(proc.pid, mount_ns(proc.pid, proc_root), label(proc), proc.init)


def names_container(target: str, proc: Process) -> bool:
    """Whether ``target`` names the whole container ``proc`` is in (a pod, a container's
    name, name prefix or id prefix), as the resolvers read it, rather than a process."""
    if proc.pod is not None:
        return True
    c = proc.container
    if c is None or not target or target.startswith("pid:") or target.isdigit():
        return False
    return c.id.startswith(target) or c.name.lstrip("/").startswith(target.lstrip("/"))


def named_containers(target: str, runtime: str | None, procs: Sequence[Process]) -> list[str]:
    """Ids of the containers ``target`` names as a whole; none under ``--runtime host``."""
    if runtime == "host":
        return []
    return list(dict.fromkeys(p.container.id for p in procs if p.container and names_container(target, p)))


def host_mount_namespaces(proc_root: str = "/proc") -> set[int]:
    """Mount namespaces a container must not share to be bound by its own: the host's
    (PID 1's) and ctrace's."""
    return {ns for ns in (mount_ns(1, proc_root), mount_ns(os.getpid())) if ns is not None}


def scopes(
    procs: Sequence[Process], whole: Iterable[str] = (), proc_root: str = "/proc", btf: bool | None = None
) -> list[Scope]:
    """The scopes of a target's processes: one per container in ``whole`` (ids of containers
    the target names as a whole), and one for the other processes."""
    btf = os.path.exists(BTF) if btf is None else btf
    wanted = set(whole)
    host = host_mount_namespaces(proc_root) if wanted else set()
    groups: dict[str, list[Member]] = {}
    names: dict[str, str] = {}
    loose: list[Member] = []
    for proc in procs:
        m = member(proc, proc_root)
        cid = proc.container.id if proc.container else None
        if cid is not None and cid in wanted:
            groups.setdefault(cid, []).append(m)
            names[cid] = m.label
        else:
            loose.append(m)
    out = []
    for cid, members in groups.items():
        # Usually one; a process that made its own (unshare -m) adds one only it has.
        spaces = tuple(sorted({m.mnt_ns for m in members if m.mnt_ns is not None}))
        usable = btf and spaces and not host.intersection(spaces)
        out.append(Scope(CONTAINER, tuple(members), names[cid], spaces if usable else ()))
    if loose:
        out.append(Scope(PROCESSES, tuple(loose)))
    return out


def scope_of(
    proc: Process, target: str, proc_root: str = "/proc", btf: bool | None = None, runtime: str | None = None
) -> Scope:
    """The scope of one process's own commands: its container if the target names it, else itself."""
    return scopes([proc], named_containers(target, runtime, [proc]), proc_root, btf)[0]


def _delete(dialect: Facts | None, element: str) -> str:
    # The statement differs by release: a bare delete() warns from 0.24, its value is an error before.
    return dialect.delete(element) if dialect is not None else f"delete({element});"


def _pid_blocks(dialect: Facts | None) -> tuple[str, ...]:
    return (
        # The fork tracepoint runs in the parent: pid is the parent's process, child_pid the new task.
        f"tracepoint:sched:sched_process_fork /{PIDS}[pid]/ {{ {PIDS}[args->child_pid] = 1; }}",
        f"tracepoint:sched:sched_process_exit /{PIDS}[tid]/ {{ {_delete(dialect, f'{PIDS}[tid]')} }}",
    )


def _nested_pid_blocks(dialect: Facts | None, ns: pidns.PidNs) -> tuple[str, ...]:
    """The PID map in a child PID namespace: seeded with ctrace's PIDs; a child forked later
    is known by the kernel's PID only (the fork tracepoint gives no task to read its number
    in ctrace's namespace from), so it goes to a second map keyed by that."""
    pid, tid = pidns.pid_of(ns), pidns.tid_of(ns)
    return (
        f"tracepoint:sched:sched_process_fork /{PIDS}[{pid}] || {KIDS}[curtask->tgid]/ "
        f"{{ {KIDS}[args->child_pid] = 1; }}",
        f"tracepoint:sched:sched_process_exit /{PIDS}[{tid}]/ {{ {_delete(dialect, f'{PIDS}[{tid}]')} }}",
        f"tracepoint:sched:sched_process_exit /{KIDS}[curtask->pid]/ {{ {_delete(dialect, f'{KIDS}[curtask->pid]')} }}",
    )


def bind(chosen: Sequence[Scope], dialect: Facts | None = None, pinned: int | None = None) -> Binding:
    """The binding of one program to ``chosen`` (several for ``--run --all``), for the
    bpftrace ``dialect`` describes (None: the statements every release takes).

    ``pinned``: the PID the program must give bpftrace with -p because its path is inside
    that process's mount namespace; the statement says what -p then adds."""
    ns: pidns.PidNs | None = getattr(dialect, "pidns", None)  # a Facts without it: the host
    pid, tid = (pidns.pid_of(ns), pidns.tid_of(ns)) if ns is not None else ("pid", "tid")
    spaces = sorted({n for s in chosen if s.kind == CONTAINER for n in s.mnt_ns})
    by_ns = {id(s) for s in chosen if s.kind == CONTAINER and s.mnt_ns}
    pids = sorted({m.pid for s in chosen if id(s) not in by_ns for m in s.members})
    begin = [pidns.seed(ns)] if ns is not None else []
    begin += [f"{MNTNS}[{n}] = 1;" for n in spaces] + [f"{PIDS}[{p}] = 1;" for p in pids]
    tests = [f"{MNTNS}[{MNTNS_OF_TASK}]"] if spaces else []
    # bpftrace prints every map left at exit: the binding's are not results.
    end = [f"clear({MNTNS});"] if spaces else []
    blocks: tuple[str, ...] = ()
    if pids:
        blocks = _pid_blocks(dialect) if ns is None else _nested_pid_blocks(dialect, ns)
        tests.append(f"{PIDS}[{pid}]" if ns is None else f"{PIDS}[{pid}] || {KIDS}[curtask->tgid]")
        end += [f"clear({PIDS});"] if ns is None else [f"clear({PIDS});", f"clear({KIDS});"]
    last = _last(chosen)
    if last is not None:
        # As bpftrace -p did: a program on one process stops when it exits (its main thread).
        blocks = (*blocks, f"tracepoint:sched:sched_process_exit /{tid} == {last}/ {{ exit(); }}")
    text = statement(chosen, pinned, dialect) + (f"; it stops when PID {last} exits" if last is not None else "")
    if ns is not None:
        end.append(f"clear({pidns.MAP});")
        text += f"; PIDs as ctrace's PID namespace {ns.inum} (level {ns.level}) counts them"
    key = "curtask->pid" if ns is not None else "tid"  # the kernel's thread ID: a key, never shown
    return Binding(tuple(begin), blocks, " || ".join(tests), text, pinned, tuple(end), pid, key)


def _last(chosen: Sequence[Scope]) -> int | None:
    """The PID whose exit ends the program: its one process, or its container's init (a
    container lives on after a worker exits); None when it covers more."""
    members = [m for s in chosen for m in s.members]
    if len({m.pid for m in members}) != 1:
        return None
    if chosen[0].kind == CONTAINER and not members[0].init:
        return None
    return members[0].pid


def statement(chosen: Sequence[Scope], pinned: int | None = None, dialect: Facts | None = None) -> str:
    """What the program admits, truthfully, for the output."""
    parts = []
    for s in chosen:
        pids = ", ".join(str(m.pid) for m in s.members)
        if s.kind == CONTAINER and s.mnt_ns:
            spaces = ", ".join(map(str, s.mnt_ns))
            parts.append(f"every process of {s.name} (mount namespace {spaces}: PIDs {pids} and any started later)")
        elif s.kind == CONTAINER:
            parts.append(f"the processes of {s.name} (PIDs {pids}) and the children they fork after it starts")
        else:
            parts.append(f"PID {pids} and the children {'they fork' if len(s.members) > 1 else 'it forks'} later")
    text = "bound to " + "; ".join(parts)
    if pinned is not None:
        if dialect is None:
            text += f"; -p {pinned} (for the path) may also limit it to PID {pinned}'s own threads (bpftrace 0.20+)"
        elif dialect.pid_filters_uprobes:
            text += f"; -p {pinned} (for the path) also limits this bpftrace to PID {pinned}'s own threads"
        else:
            text += f"; -p {pinned} only names the path"
    return text


def _take(text: str, name: str) -> tuple[str, list[str]]:
    """``text`` without its ``name`` blocks, and their statements."""
    found = [m.group(1).strip() for m in _BLOCK[name].finditer(text)]
    return _BLOCK[name].sub("", text).strip(), [f for f in found if f]


def guard(binding: Binding, condition: str) -> str:
    """The binding's predicate and another condition (e.g. ``@start[tid]``), as one predicate."""
    if not binding.predicate:
        return condition
    if not condition:
        return binding.predicate
    return f"({binding.predicate}) && {condition}"


def program(binding: Binding, probes: str, begin: Sequence[str] = (), end: Sequence[str] = ()) -> str:
    """A whole program: one BEGIN (the binding's statements, then ``begin`` and any BEGIN of
    ``probes``), the binding's blocks, ``probes``, one END (``end``, any END of ``probes``,
    then the binding's). bpftrace 0.17 refuses a second BEGIN or END."""
    probes, own_begin = _take(probes, "BEGIN")
    probes, own_end = _take(probes, "END")
    first = (*binding.begin, *begin, *own_begin)
    last = (*end, *own_end, *binding.end)
    parts = [f"BEGIN {{ {' '.join(first)} }}"] if first else []
    parts += [*binding.blocks, probes]
    if last:
        parts.append(f"END {{ {' '.join(last)} }}")
    return " ".join(parts)


class Part(Record):
    """One target's attach points in a combined program (``--run --all``)."""

    pid: int
    path: str  # the path bpftrace opens, to tell the same file by device and inode
    points: tuple[str, ...]  # ``kind:path:site``, as emit.points makes them
    unsafe: bool = False


def file_key(path: str) -> tuple[int, int] | str:
    try:
        st = os.stat(path)
    except OSError:
        return path
    return (st.st_dev, st.st_ino)


def site_of(point: str, path: str) -> tuple[str, str]:
    """(probe kind, site) of an attach point ``kind:LITERAL:site`` made from ``path``."""
    kind, _, rest = point.partition(":")
    for literal in (path, f'"{path}"'):
        if rest.startswith(literal + ":"):
            return kind, rest[len(literal) + 1 :]
    return kind, rest


def distinct(parts: Sequence[Part]) -> list[str]:
    """The attach points with one per (file, probe kind, site): two PIDs that run one file
    through two paths (/proc/A/root/..., /proc/B/root/...) must not attach it twice, or
    every event of either prints twice."""
    seen: set[object] = set()
    out = []
    for part in parts:
        key = file_key(part.path)
        for point in part.points:
            k = (key, *site_of(point, part.path))
            if k not in seen:
                seen.add(k)
                out.append(point)
    return out


def legend(procs: Sequence[Process]) -> list[str]:
    """One line per PID naming its container or pod, printed before ``--run`` output."""
    return [f"PID {p.pid} = {label(p)}" for p in procs]
