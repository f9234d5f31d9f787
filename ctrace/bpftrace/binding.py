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
from ctrace.proc import mapped
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
NAMES = "@ctrace_names"  # a combined program over several containers: scope number -> its label
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
    owner: str = ""  # over several containers (--run --all): an expression naming the event's container
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


def whole_containers(
    procs: Sequence[Process], target: str, proc_root: str = "/proc", runtime: str | None = None
) -> dict[int, Scope]:
    """Each process of a container ``target`` names as a whole -> that container's scope, of
    all its processes: every program printed for one of them admits the whole container."""
    found = scopes(procs, named_containers(target, runtime, procs), proc_root)
    return {m.pid: s for s in found if s.kind == CONTAINER for m in s.members}


def _delete(dialect: Facts | None, element: str) -> str:
    # The statement differs by release: a bare delete() warns from 0.24, its value is an error before.
    return dialect.delete(element) if dialect is not None else f"delete({element});"


def _pid_blocks(dialect: Facts | None, inherit: bool = False) -> tuple[str, ...]:
    value = f"{PIDS}[pid]" if inherit else "1"  # a named program: the child keeps its parent's container
    return (
        # The fork tracepoint runs in the parent: pid is the parent's process, child_pid the new task.
        f"tracepoint:sched:sched_process_fork /{PIDS}[pid]/ {{ {PIDS}[args->child_pid] = {value}; }}",
        f"tracepoint:sched:sched_process_exit /{PIDS}[tid]/ {{ {_delete(dialect, f'{PIDS}[tid]')} }}",
    )


def _nested_pid_blocks(dialect: Facts | None, ns: pidns.PidNs, inherit: bool = False) -> tuple[str, ...]:
    """The PID map in a child PID namespace: seeded with ctrace's PIDs; a child forked later
    is known by the kernel's PID only (the fork tracepoint gives no task to read its number
    in ctrace's namespace from), so it goes to a second map keyed by that."""
    pid, tid = pidns.pid_of(ns), pidns.tid_of(ns)
    # A named program: the child keeps its parent's container (one of the two lookups reads 0).
    value = f"{PIDS}[{pid}] + {KIDS}[curtask->tgid]" if inherit else "1"
    return (
        f"tracepoint:sched:sched_process_fork /{PIDS}[{pid}] || {KIDS}[curtask->tgid]/ "
        f"{{ {KIDS}[args->child_pid] = {value}; }}",
        f"tracepoint:sched:sched_process_exit /{PIDS}[{tid}]/ {{ {_delete(dialect, f'{PIDS}[{tid}]')} }}",
        f"tracepoint:sched:sched_process_exit /{KIDS}[curtask->pid]/ {{ {_delete(dialect, f'{KIDS}[curtask->pid]')} }}",
    )


def owners(chosen: Sequence[Scope]) -> list[str]:
    """The distinct labels of what ``chosen`` admits: a container scope's name, each loose
    process's container (or "host process"). More than one: events must say whose they are."""
    return list(dict.fromkeys(s.name if s.kind == CONTAINER else m.label for s in chosen for m in s.members))


def bind(chosen: Sequence[Scope], dialect: Facts | None = None, pinned: int | None = None) -> Binding:
    """The binding of one program to ``chosen`` (several for ``--run --all``), for the
    bpftrace ``dialect`` describes (None: the statements every release takes).

    ``pinned``: the PID the program must give bpftrace with -p because its path is inside
    that process's mount namespace; the statement says what -p then adds.

    Over processes of more than one container (or host) the maps hold a number per label
    instead of 1, a forked child inherits its parent's, and ``owner`` names the event's one
    (a string map read by that number: measured on 0.17, 0.23 and 0.27)."""
    ns: pidns.PidNs | None = getattr(dialect, "pidns", None)  # a Facts without it: the host
    pid, tid = (pidns.pid_of(ns), pidns.tid_of(ns)) if ns is not None else ("pid", "tid")
    labels = owners(chosen)
    named = len(labels) > 1
    by_ns = {id(s) for s in chosen if s.kind == CONTAINER and s.mnt_ns}

    def number(s: Scope, m: Member | None = None) -> int:
        return labels.index(s.name if s.kind == CONTAINER or m is None else m.label) + 1 if named else 1

    spaces = {n: number(s) for s in chosen if id(s) in by_ns for n in s.mnt_ns}
    pids = {m.pid: number(s, m) for s in chosen if id(s) not in by_ns for m in s.members}
    begin = [pidns.seed(ns)] if ns is not None else []
    begin += [f"{MNTNS}[{n}] = {v};" for n, v in sorted(spaces.items())]
    begin += [f"{PIDS}[{p}] = {v};" for p, v in sorted(pids.items())]
    tests = [f"{MNTNS}[{MNTNS_OF_TASK}]"] if spaces else []
    values = list(tests)  # the maps' numbers, summed to name the event's container
    # bpftrace prints every map left at exit: the binding's are not results.
    end = [f"clear({MNTNS});"] if spaces else []
    blocks: tuple[str, ...] = ()
    if pids:
        if ns is None:
            blocks = _pid_blocks(dialect, named)
            tests.append(f"{PIDS}[pid]")
            values.append(f"{PIDS}[pid]")
            end.append(f"clear({PIDS});")
        else:
            blocks = _nested_pid_blocks(dialect, ns, named)
            tests.append(f"{PIDS}[{pid}] || {KIDS}[curtask->tgid]")
            values += [f"{PIDS}[{pid}]", f"{KIDS}[curtask->tgid]"]
            end += [f"clear({PIDS});", f"clear({KIDS});"]
    owner = ""
    if named:
        begin += [f'{NAMES}[{i}] = "{_literal(name)}";' for i, name in enumerate(labels, 1)]
        end.append(f"clear({NAMES});")
        # A process is in one of them: the others' lookups read 0.
        owner = f"{NAMES}[{' + '.join(values)}]"
    last = _last(chosen)
    if last is not None:
        # As bpftrace -p did: a program on one process stops when it exits (its main thread).
        blocks = (*blocks, f"tracepoint:sched:sched_process_exit /{tid} == {last}/ {{ exit(); }}")
    text = statement(chosen, pinned, dialect) + (f"; it stops when PID {last} exits" if last is not None else "")
    if ns is not None:
        end.append(f"clear({pidns.MAP});")
        text += f"; PIDs as ctrace's PID namespace {ns.inum} (level {ns.level}) counts them"
    key = "curtask->pid" if ns is not None else "tid"  # the kernel's thread ID: a key, never shown
    return Binding(tuple(begin), blocks, " || ".join(tests), text, pinned, tuple(end), owner=owner, pid=pid, tid=key)


_UNSAFE = re.compile(r"[^A-Za-z0-9 _.:/+-]")


def _literal(label: str) -> str:
    """A label as it may stand in a bpftrace string (and printf argument): no quote,
    backslash or '%', nor the parentheses and commas that delimit it in the output
    (agent/stream.py reads it back); short enough for bpftrace 0.17's 64-byte strings.
    "docker container web (pod ns/web-1)" -> "docker container web pod ns/web-1"."""
    return _UNSAFE.sub("_", label.replace("(", "").replace(")", ""))[:60]


def _last(chosen: Sequence[Scope]) -> int | None:
    """The PID whose exit ends the program: its one process, or its container's init (a
    container lives on after a worker exits); None when it covers more."""
    members = [m for s in chosen for m in s.members]
    if len(chosen) == 1 and chosen[0].kind == CONTAINER:
        inits = [m.pid for m in members if m.init]
        return inits[0] if len(inits) == 1 else None
    return members[0].pid if len({m.pid for m in members}) == 1 else None


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


def file_key(path: str) -> object | None:
    """The file a uprobe through ``path`` lands on; None when it does not open (its process
    exited). Not (dev, inode): each overlayfs mount has its own st_dev, and the kernel attaches
    to the lower layer's inode (trace_uprobe.c, d_real_inode), so two replicas of one image
    attach once, and are one file by inode, size and mtime (ctrace/proc/mapped.py)."""
    return mapped.key(path)


def legend(procs: Sequence[Process]) -> list[str]:
    """One line per PID naming its container or pod, printed before ``--run`` output."""
    return [f"PID {p.pid} = {label(p)}" for p in procs]
