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

from ctrace.elf import names as symbol_names
from ctrace.match import last_component
from ctrace.model import AGENT_NAMESPACE, Command, Pod, Symbol
from ctrace.record import Record

_BARE_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BARE_PATH = re.compile(r"/[A-Za-z0-9_./+@-]*\Z")
_QUOTABLE = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+\Z")  # printable ASCII but " and \


class Site(Record):
    """How bpftrace is told where to attach, and what the text is."""

    text: str
    kind: str  # "name", "name+offset", "address" (a virtual address) or "offset" (a file offset)
    unsafe: str = ""  # why bpftrace needs --unsafe for it (dialect.unsafe_reason), or ""
    vaddr: int | None = None  # the virtual address it stands for, to say so beside a file offset

    def describe(self) -> str:
        """The number in the command and, where it differs, the symbol's virtual address."""
        if self.kind == "offset" and self.vaddr is not None:
            return f"file offset {self.text} (vaddr 0x{self.vaddr:x})"
        if self.kind == "address":
            return f"vaddr {self.text}"
        if self.kind == "name+offset" and self.vaddr is not None:
            return f"{self.text} (vaddr 0x{self.vaddr:x})"
        return f"vaddr 0x{self.vaddr:x}" if self.vaddr is not None else self.text


def describe(sites: Sequence[Site]) -> str:
    """What the header says of the sites: one, or the file offsets of several RETs."""
    if len(sites) > 1 and all(s.kind == "offset" and s.vaddr is not None for s in sites):
        vaddrs = ", ".join(f"0x{s.vaddr:x}" for s in sites if s.vaddr is not None)
        return f"file offsets {', '.join(s.text for s in sites)} (vaddrs {vaddrs})"
    return "; ".join(s.describe() for s in sites)


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
        self._ends: list[str] | None = None

    @property
    def count(self) -> Counter[str]:
        """Functions per name, on first use: only a name with a '*' needs them all."""
        if self._count is None:
            self._count = Counter(symbol_names.names(self.symbols))
        return self._count

    @property
    def names(self) -> list[str]:
        """Sorted, on first use: only names with a '*' need it (Go methods on pointers)."""
        if self._names is None:
            self._names = sorted(self.count)
        return self._names

    def of(self, name: str) -> int:
        """How many functions have this name: one search of the storage, not a Counter of every name."""
        if name not in self._of:
            found = self.count[name] if self._count is not None else symbol_names.count(self.symbols, name)
            self._of[name] = found
        return self._of[name]

    @property
    def ends(self) -> list[str]:
        """Every name reversed, sorted: the names ending with a suffix are one range of it."""
        if self._ends is None:
            self._ends = sorted(n[::-1] for n in self.count)
        return self._ends

    def glob_hits(self, name: str) -> int:
        """Functions bpftrace's expansion of ``name``'s '*'s reaches: among the names that start
        with the text before the first '*' or end with the text after the last (whichever
        are fewer), those the whole pattern matches."""
        parts = name.split("*")
        prefix, suffix = parts[0], parts[-1]
        lo, hi = _span(self.names, prefix)
        rlo, rhi = _span(self.ends, suffix[::-1])
        cands = self.names[lo:hi] if hi - lo <= rhi - rlo else [n[::-1] for n in self.ends[rlo:rhi]]
        return sum(self.count[c] for c in cands if _globbed(parts, c))

    def unique(self, name: str) -> bool:
        """Whether attaching by this name reaches exactly one function."""
        if "*" in name:
            return self.glob_hits(name) == 1
        return self.of(name) == 1


def _span(ordered: list[str], prefix: str) -> tuple[int, int]:
    """The range of the sorted ``ordered`` that starts with ``prefix``."""
    return bisect.bisect_left(ordered, prefix), bisect.bisect_left(ordered, prefix + "\U0010ffff")


def _globbed(parts: list[str], name: str) -> bool:
    """Whether ``name`` matches the pattern ``'*'.join(parts)``, '*' being any text."""
    first, last = parts[0], parts[-1]
    if len(parts) == 1:
        return name == first
    if len(name) < len(first) + len(last) or not name.startswith(first) or not name.endswith(last):
        return False
    at, end = len(first), len(name) - len(last)
    for part in parts[1:-1]:  # each middle part, leftmost first, between the ends
        at = name.find(part, at, end)
        if at < 0:
            return False
        at += len(part)
    return True


def name_site(sym: Symbol, index: NameIndex) -> Site | None:
    """The function by (quoted) name, if that reaches it and only it."""
    quoted = quote(sym.name, _BARE_SYMBOL)
    if quoted is not None and index.unique(sym.name):
        return Site(quoted, "name")
    return None


def offset_site(file_offset: int, why: str, vaddr: int | None = None) -> Site:
    """An address given as a file offset: bpftrace takes a number no symbol it reads covers
    as one, with --unsafe (every measured release; see ctrace/sites.py)."""
    return Site(hex(file_offset), "offset", why, vaddr)


PROBE_TYPES = ("uprobe", "uretprobe")


def points(path: str, where: Site | Sequence[Site], kind: str = "uprobe") -> list[str]:
    """The attach points ``kind:path:site`` (path already a bpftrace literal)."""
    if kind not in PROBE_TYPES:
        raise ValueError(f"unknown probe type {kind!r}")
    sites = [where] if isinstance(where, Site) else list(where)
    return [f"{kind}:{path}:{s.text}" for s in sites]


def name_offset_site(sym: Symbol, index: NameIndex, address: int) -> Site | None:
    """``"name"+N`` for an address inside a named function, for a bpftrace that checks
    offsets (dialect.offset_probes); None where the name cannot stand alone."""
    named = name_site(sym, index)
    if named is None:
        return None
    return Site(f"{named.text}+{address - sym.address}", "name+offset", vaddr=address)


_LABEL_DROP = re.compile(r"[^A-Za-z0-9_.:~<>()*&,+\[\]-]")


def label(name: str) -> str:
    """The function's short name as it may stand inside a bpftrace string literal (and a
    printf format): its last component, without quotes, backslashes or '%'."""
    kept = _LABEL_DROP.sub("_", last_component(_without_arguments(name)) or name)[:48]
    return kept or "f"


def _without_arguments(name: str) -> str:
    """A demangled C++ name without its final argument list: ``ns::f(long, long)`` -> ``ns::f``."""
    if "::" not in name or not name.endswith(")"):
        return name
    depth = 0
    for i in range(len(name) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(name[i], 0)
        if depth == 0:
            return name[:i] if i > 0 else name
    return name


def command(
    form: str, pid: int, text: str, unsafe: bool = False, with_p: bool = True, program: str = "bpftrace"
) -> Command:
    """``bpftrace [--unsafe] [-p PID] -e PROGRAM``.

    The program binds to its processes itself (its predicate): -p restricts uprobes
    only from bpftrace 0.20 (dialect.pid_filters_uprobes). ``with_p`` adds -p, which
    makes bpftrace exit with the process, where the path allows it: for a process in
    another mount namespace bpftrace reads every path given with ``-p`` as inside that
    namespace (it prefixes ``/proc/PID/root``, utils.cpp path_for_pid_mountns), so a
    host-only path such as MergedDir must not carry ``-p``.
    """
    argv = [program]
    if unsafe:
        argv.append("--unsafe")
    if with_p:
        argv += ["-p", str(pid)]
    argv += ["-e", text]
    return Command(form, tuple(argv), shlex.join(argv))


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
    """The perf path of the tracing-basics post (4.1.2): add a uprobe event, record it with DWARF call graphs for
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
