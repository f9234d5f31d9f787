"""bpftrace argv and shell lines; pure, and the only place that quotes anything.

Two quoting layers, each closed here:
- the bpftrace program: a path or symbol goes in bare only if it is a plain
  identifier, else inside "..." only if it holds printable ASCII without '"'
  or '\\' (bpftrace 0.17 reads escapes inside quotes), else the probe falls
  back to a numeric address, which nothing can smuggle code through;
- the shell: ``shlex.join`` of the argv, which ``shlex.split`` turns back
  into the same argv.
"""

from __future__ import annotations

import bisect
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from operator import countOf

from ctrace.elf import symtab
from ctrace.elf.columns import Columns
from ctrace.match import last_component
from ctrace.model import Command, Pod, Symbol
from ctrace.record import Record

_BARE_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BARE_PATH = re.compile(r"/[A-Za-z0-9_./+@-]*\Z")
_QUOTABLE = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+\Z")  # printable ASCII but " and \

STACK_ACTION = 'printf("%s\\n", ustack);'
# --action: what a probe does when it fires (latency is two blocks: see latency_program).
ACTIONS = {
    "stack": STACK_ACTION,
    "count": "@calls[probe, pid] = count();",
    "stacks": "@stacks[probe, pid, 0, ustack(perf)] = count();",  # see STACKS_ENTRY
    "args": 'printf("%d %s %lx %lx %lx %lx %lx %lx\\n", pid, probe, arg0, arg1, arg2, arg3, arg4, arg5);',
}
# Go's register ABI (Go 1.17+, amd64) passes integer arguments in RAX, RBX, RCX, RDI, RSI, R8,
# not in the SysV registers bpftrace's arg0..arg5 read.
GO_ARGS = (
    'printf("%d %s %lx %lx %lx %lx %lx %lx\\n", pid, probe, '
    'reg("ax"), reg("bx"), reg("cx"), reg("di"), reg("si"), reg("r8"));'
)
LATENCY_ENTRY = "@start[tid] = nsecs;"
LATENCY_EXIT = "@usecs = hist((nsecs - @start[tid]) / 1000); delete(@start[tid]);"


# Counted in the kernel; ustack(perf) starts each frame with its address on bpftrace
# 0.17, 0.23 and 0.27 (ustack(raw) is 0.21+), which ctrace names itself (symbolize.py).
# At a function's entry the frame-pointer walk skips the caller (the callee has not
# pushed its frame yet): the return address on top of the stack is that caller.
STACKS_ENTRY = '@stacks[probe, pid, *(uint64 *)reg("sp"), ustack(perf)] = count();'


def action_text(action: str, language: str, kind: str = "uprobe") -> str:
    if action == "args" and language == "go":
        return GO_ARGS
    if action == "stacks" and kind == "uprobe":
        return STACKS_ENTRY
    return ACTIONS[action]


def latency_program(path: str, entry: Sequence[Site], exits: Sequence[Site], exit_kind: str, pid: int | None) -> str:
    """Entry stamps the thread's clock; each exit (uretprobe, or a uprobe on each RET for Go) adds to a histogram."""
    own = f"pid == {int(pid)}" if pid is not None else ""
    first = f"{', '.join(points(path, entry))}{f' /{own}/' if own else ''} {{ {LATENCY_ENTRY} }}"
    cond = " && ".join(c for c in (own, "@start[tid]") if c)
    last = "END { clear(@start); }"  # calls still in flight at Ctrl-C are not results
    return f"{first} {', '.join(points(path, exits, exit_kind))} /{cond}/ {{ {LATENCY_EXIT} }} {last}"


class Site(Record):
    """How bpftrace is told where to attach: a (quoted) name or an address."""

    text: str
    kind: str  # "name" or "address"
    unsafe: bool = False  # bpftrace 0.17 wants --unsafe for unverifiable addresses


def quote(text: str, bare: re.Pattern[str]) -> str | None:
    """``text`` as it may stand in an attach point, or None if it cannot."""
    if bare.match(text):
        return text
    if _QUOTABLE.match(text):
        return f'"{text}"'
    return None


def quote_path(path: str) -> str | None:
    return quote(path, _BARE_PATH)


class NameIndex:
    """Sorted symbol names, to tell whether a name with '*' expands to itself only.

    bpftrace 0.17 expands '*' in a function name even inside quotes, so
    ``"pkg.(*T).m"`` would also attach to ``pkg.(*OtherT).m``.
    """

    def __init__(self, symbols: Sequence[Symbol]) -> None:
        self.symbols = symbols
        self._count: Counter[str] | None = None
        self._names: list[str] | None = None
        self._of: dict[str, int] = {}

    @property
    def count(self) -> Counter[str]:
        """Functions per name, on first use: only a name with a '*' needs them all."""
        if self._count is None:
            self._count = Counter(symtab.names_of(self.symbols))
        return self._count

    @property
    def names(self) -> list[str]:
        """Sorted, on first use: only names with a '*' need it (Go methods on pointers)."""
        if self._names is None:
            self._names = sorted(self.count)
        return self._names

    def of(self, name: str) -> int:
        """How many functions have this name: one pass in C, not a Counter of 70k names."""
        if name not in self._of:
            if self._count is not None:
                self._of[name] = self.count[name]
            elif isinstance(self.symbols, Columns):
                self._of[name] = len(self.symbols.find(name))  # no name split out
            else:
                self._of[name] = countOf(symtab.names_of(self.symbols), name)
        return self._of[name]

    def glob_hits(self, name: str) -> int:
        prefix = name.split("*", 1)[0]
        rx = re.compile(".*".join(re.escape(p) for p in name.split("*")) + r"\Z", re.S)
        lo = bisect.bisect_left(self.names, prefix)
        hits = 0
        for cand in self.names[lo:]:
            if not cand.startswith(prefix):
                break
            if rx.match(cand):
                hits += self.count[cand]
        return hits

    def unique(self, name: str) -> bool:
        """Whether attaching by this name reaches exactly one function."""
        if "*" in name:
            return self.glob_hits(name) == 1
        return self.of(name) == 1


def site(sym: Symbol, index: NameIndex, file_offset: int | None, stripped: bool) -> Site | None:
    """Name the function by name when that is exact and safe, else by address.

    On an unstripped file bpftrace 0.17 checks an address against the symbol
    table and takes the virtual address; on a stripped one it cannot check,
    wants --unsafe and reads the number as a file offset.
    """
    return name_site(sym, index) or address_site(sym.address, file_offset, stripped)


def name_site(sym: Symbol, index: NameIndex) -> Site | None:
    """The function by (quoted) name, if that reaches it and only it."""
    quoted = quote(sym.name, _BARE_SYMBOL)
    if quoted is not None and index.unique(sym.name):
        return Site(quoted, "name")
    return None


def address_site(address: int, file_offset: int | None, stripped: bool) -> Site | None:
    """An address probe: the virtual address, or on a stripped file the file offset."""
    if not stripped:
        return Site(hex(address), "address")
    if file_offset is None:
        return None
    return Site(hex(file_offset), "address", unsafe=True)


def offset_site(file_offset: int) -> Site:
    """A probe inside a function (a RET), always as a file offset with --unsafe.

    bpftrace 0.17 as Debian builds it cannot check instruction boundaries and
    refuses ``func+N`` or a mid-function virtual address even with --unsafe
    ("compiled without (k|u)probe offset support"). A number no symbol covers
    it takes, with --unsafe, as a file offset: true of every number on a stripped
    file, and the caller checks it for an unstripped one.
    """
    return Site(hex(file_offset), "address", unsafe=True)


PROBE_TYPES = ("uprobe", "uretprobe")


def points(path: str, where: Site | Sequence[Site], kind: str = "uprobe") -> list[str]:
    """The attach points ``kind:path:site`` (path already a bpftrace literal)."""
    if kind not in PROBE_TYPES:
        raise ValueError(f"unknown probe type {kind!r}")
    sites = [where] if isinstance(where, Site) else list(where)
    return [f"{kind}:{path}:{s.text}" for s in sites]


def program(
    path: str, where: Site | Sequence[Site], action: str = STACK_ACTION, kind: str = "uprobe", pid: int | None = None
) -> str:
    """One probe block; several sites (each RET of a function) share one action."""
    predicate = f" /pid == {int(pid)}/" if pid is not None else ""
    return f"{', '.join(points(path, where, kind))}{predicate} {{ {action} }}"


def combined(parts: Sequence[tuple[int, Sequence[str], bool]], action: str = STACK_ACTION) -> Command:
    """One bpftrace program for several probes (pid, attach points, unsafe), for ``--run --all``.

    The PIDs are bound with a ``pid ==`` filter, not -p: -p takes one PID, and
    bpftrace 0.17 reads paths given with -p as inside that PID's mount namespace.
    The attach points come from emit.points, so they are already quoted.
    """
    pids = sorted({pid for pid, _, _ in parts})
    argv = ["bpftrace"]
    if any(unsafe for _, _, unsafe in parts):
        argv.append("--unsafe")
    predicate = " || ".join(f"pid == {p}" for p in pids)
    every = list(dict.fromkeys(point for _, pts, _ in parts for point in pts))  # one file, one attachment
    argv += ["-e", f"{', '.join(every)} /{predicate}/ {{ {action} }}"]
    return Command("combined", tuple(argv), shlex.join(argv))


def command(
    form: str,
    pid: int,
    path: str,
    where: Site | Sequence[Site],
    action: str = STACK_ACTION,
    kind: str = "uprobe",
    by_filter: bool = False,
    exits: tuple[Sequence[Site], str] | None = None,
) -> Command | None:
    """``bpftrace -p PID -e PROGRAM``; None when the path cannot be quoted.

    ``by_filter`` binds to the PID with a ``/pid == PID/`` predicate instead:
    for a process in another mount namespace bpftrace 0.17 reads every path
    given with ``-p`` as inside that namespace (it prefixes ``/proc/PID/root``,
    utils.cpp path_for_pid_mountns), so a host-only path such as MergedDir
    must not carry ``-p``.
    """
    literal = quote_path(path)
    if literal is None:
        return None
    sites = [where] if isinstance(where, Site) else list(where)
    argv = ["bpftrace"]
    if any(s.unsafe for s in [*sites, *(exits[0] if exits else [])]):
        argv.append("--unsafe")
    bound = pid if by_filter else None
    if exits is not None:  # --action latency
        text = latency_program(literal, sites, exits[0], exits[1], bound)
    else:
        text = program(literal, sites, action, kind, bound)
    argv += ["-e", text] if by_filter else ["-p", str(pid), "-e", text]
    return Command(form, tuple(argv), shlex.join(argv))


AGENT_NAMESPACE = "ctrace-system"


def agent_command(pod: Pod, agent: str, funcs: Sequence[str], context: str | None = None) -> Command:
    """``kubectl exec`` into the node agent on the pod's node, running ctrace there.

    The agent has the node's PID namespace, so ctrace finds the container's host
    PID itself; a PID found here would mean nothing on that node.
    """
    argv = ["kubectl"]
    if context:
        argv += ["--context", context]
    argv += ["exec", "-it", "-n", AGENT_NAMESPACE, agent, "-c", "agent", "--"]
    argv += ["ctrace", "target", f"pod/{pod.name}", "-n", pod.namespace, "-c", pod.container]
    for func in funcs:
        argv += ["--func", func]
    argv.append("--run")
    return Command("agent", tuple(argv), shlex.join(argv))


def perf_event(symbol: str, address: int, pid: int) -> str:
    """A perf probe event name: letters, digits and '_', unique per address and process, at most 63 chars."""
    last = re.sub(r"[^A-Za-z0-9_]", "_", last_component(symbol)) or "f"
    if not last[0].isalpha():
        last = "f" + last
    return f"{last[:36]}_{address:x}_{pid}"


def perf_commands(pid: int, path: str, symbol: str, offset: int, seconds: int = 10) -> tuple[Command, ...]:
    """The seed's perf path (4.1.2): add a uprobe event, record it with DWARF call graphs for
    the PID, show it, remove the event. perf probe takes a raw number as the uprobe's file
    offset (perf 6.1, measured); a number, not the name, because ``pkg.(*T).m`` does not
    parse as a perf probe point."""
    event = f"ctrace:{perf_event(symbol, offset, pid)}"
    steps = [
        ["perf", "probe", "-x", path, "--add", f"{event}=0x{offset:x}"],
        ["perf", "record", "-e", event, "-p", str(pid), "-g", "--call-graph", "dwarf", "--", "sleep", str(seconds)],
        ["perf", "script"],
        ["perf", "probe", "--del", event],
    ]
    return tuple(Command(f"perf-{s[1]}", tuple(s), shlex.join(s)) for s in steps)
