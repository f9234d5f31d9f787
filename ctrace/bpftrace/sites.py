"""Which name or number makes bpftrace attach where we mean (the dialect says which forms
the release at hand accepts).

Measured with Debian's builds: given ``uprobe:FILE:N`` bpftrace asks for a symbol of FILE
covering N as a *virtual address* (it reads .symtab, .dynsym and a debug file it finds by
build-id on the host or by .gnu_debuglink next to FILE; not MiniDebugInfo, not Go's table).
- a symbol starts at N: N is that function's entry, checked, no --unsafe needed;
- a symbol covers N past its start: refused by a release without offset support (Debian's
  0.17: "compiled without (k|u)probe offset support"), which also refuses ``sym+N``; a
  release with it (dialect.offset_probes) checks ``sym+N`` against instruction boundaries;
- no symbol covers N: with --unsafe, N is taken as a FILE OFFSET (every release), and
  bpftrace warns it cannot check the instruction boundary.
So an entry is named by name where that is exact, else by its virtual address when a
symbol bpftrace reads starts there, else by its file offset when no symbol covers that
number; a RET inside a function by ``sym+N`` where the release checks it and the name
keeps its offset (dialect.keeps_offset: not a name bpftrace reads as a wildcard), else by
its virtual address, else by its file offset, and only when no symbol covers it.
An address is good only if bpftrace's lookup of its symbol's name again comes back to it
(dialect.first_namesake): of two functions of one name the second goes by file offset
where no symbol covers that (a -no-pie build), else is refused (SharedName) and left out.
"""

from __future__ import annotations

import bisect
import os
from collections import Counter
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add, itemgetter

from ctrace.bpftrace.dialect import Dialect
from ctrace.bpftrace.emit import BARE_SYMBOL, quote
from ctrace.elf import ElfInfo, code
from ctrace.elf import names as symbol_names
from ctrace.elf.debuginfo import DEBUG_ROOT
from ctrace.elf.reader import ElfFile
from ctrace.errors import NotTraceable
from ctrace.model import Symbol
from ctrace.record import Record

_SEARCHES = 16  # names looked up one search each before NameIndex counts them all at once
BCC_TABLES = ("symtab", "dynsym")  # the symbol tables bpftrace itself names functions from
_NAME, _ADDRESS, _SIZE = itemgetter(0), itemgetter(1), itemgetter(2)
_FIRST, _SECOND, _THIRD = itemgetter(0), itemgetter(1), itemgetter(2)


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
            if len(self._of) >= _SEARCHES:
                self.count  # noqa: B018 - many functions by address (namesake): one Counter beats a search each
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
    quoted = quote(sym.name, BARE_SYMBOL)
    if quoted is not None and index.unique(sym.name):
        return Site(quoted, "name")
    return None


def offset_site(file_offset: int, why: str, vaddr: int | None = None) -> Site:
    """An address given as a file offset: bpftrace takes a number no symbol it reads covers
    as one, with --unsafe (every measured release; see ctrace/bpftrace/sites.py)."""
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


class Spans:
    """The functions bcc will see, for 'does one start at / cover this address?'.

    Built on first use: most functions are attached by name and never ask, and sorting a
    large Go binary's symbols for each path form is time a user would wait for.
    """

    def __init__(
        self, symbols: Sequence[Symbol], sources: frozenset[str] | None = None, files: Sequence[str] = ()
    ) -> None:
        self._symbols = symbols
        self._sources = sources  # None: every symbol
        self._files = tuple(files)  # the files bcc reads symbols from: the binary, its debug files
        self._starts: list[int] | None = None
        self._ends: list[int] = []
        self._names: list[str] = []
        self._reach: list[int] = []
        self._entry: set[int] = set()
        self._first: dict[str, int | None] = {}

    def _build(self) -> list[int]:
        chosen = self._symbols
        if self._sources is not None:
            keep = self._sources
            chosen = [s for s in chosen if s.source in keep]
        ends = map(add, map(_ADDRESS, chosen), map(max, map(_SIZE, chosen), repeat(1)))
        ordered = sorted(zip(map(_ADDRESS, chosen), ends, map(_NAME, chosen)))
        starts = list(map(_FIRST, ordered))
        self._ends = list(map(_SECOND, ordered))
        self._names = list(map(_THIRD, ordered))
        self._reach = list(accumulate(self._ends, max))  # the farthest end so far
        self._entry = set(starts)
        self._starts = starts
        return starts

    def covering(self, address: int) -> list[tuple[str, int]]:
        """(name, start) of each symbol bcc reads that covers ``address``."""
        starts = self._starts if self._starts is not None else self._build()
        i = bisect.bisect_right(starts, address) - 1
        out = []
        while i >= 0 and self._reach[i] > address:  # past the farthest end, nothing earlier covers it
            if self._ends[i] > address:
                out.append((self._names[i], starts[i]))
            i -= 1
        return out

    def first_named(self, name: str) -> int | None:
        """Where bpftrace looks ``name`` up: the first function so named in each file bcc reads
        (dialect.first_namesake); None where the files disagree."""
        if name not in self._first:
            from ctrace.elf.reader import open_elf

            firsts = set()
            for path in self._files:
                try:
                    found = open_elf(path).first_function(name)
                except (OSError, NotTraceable):
                    continue
                if found is not None:
                    firsts.add(found)
            self._first[name] = firsts.pop() if len(firsts) == 1 else None
        return self._first[name]

    @property
    def entry(self) -> set[int]:
        if self._starts is None:
            self._build()
        return self._entry

    def covers(self, address: int) -> bool:
        starts = self._starts if self._starts is not None else self._build()
        i = bisect.bisect_right(starts, address) - 1
        return i >= 0 and self._reach[i] > address


def bcc_visible(info: ElfInfo, path: str) -> Spans:
    """Functions bcc reads when bpftrace is given ``path`` (see module doc).

    bcc looks for a .gnu_debuglink file next to the path it was given: found through
    /proc/PID/root/usr/bin/x, not through /proc/PID/exe (measured: "Could not resolve
    address" there). A build-id file is looked up on the host whatever the path.
    """
    d = os.path.dirname(path)
    near = {d, f"{d}/.debug", f"{DEBUG_ROOT}{d}"}
    seen = {
        source
        for source, found in info.debug_files
        if (source == "build-id" and found.startswith(DEBUG_ROOT + "/"))
        or (source == "debuglink" and os.path.dirname(found) in near)
    }
    files = [info.path, *(found for source, found in info.debug_files if source in seen)]
    return Spans(info.symbols, frozenset((*BCC_TABLES, *seen)), files)


class SharedName(NotTraceable):
    """A function bpftrace cannot reach: another of its name comes first (dialect.first_namesake)."""


def namesake(address: int, spans: Spans, index: NameIndex, dialect: Dialect) -> tuple[str, int | None] | None:
    """(name, where bpftrace goes instead) if a probe at ``address`` would land elsewhere:
    a symbol covering it shares its name with another function, and bpftrace takes the first
    of that name (dialect.first_namesake); None where it lands at ``address``."""
    if not dialect.first_namesake:
        return None
    for name, start in spans.covering(address):
        if index.of(name) > 1:
            first = spans.first_named(name)
            if first != start:
                return name, first
    return None


def shared_name(sym: Symbol, path: str, stolen: tuple[str, int | None], dialect: Dialect, what: str) -> SharedName:
    name, first = stolen
    where = f"the {name} at 0x{first:x} comes" if first is not None else f"another {name} comes"
    return SharedName(
        f"bpftrace {dialect.name} cannot probe {what} {sym.name} at 0x{sym.address:x} ({path}): {where} first in "
        "its symbol table, and bpftrace attaches any address inside a function of that name there",
        dialect.namesake_hint(name, first),
    )


def entry_site(
    sym: Symbol, elf_file: ElfFile, spans: Spans, index: NameIndex, dialect: Dialect, path: str = ""
) -> Site | None:
    """The function's entry: by name where bpftrace reads that name and it is exact, else
    by its virtual address where a symbol bpftrace reads starts there and bpftrace's lookup
    of that symbol's name comes back to it, else by file offset; refused (SharedName) where
    another function of its name takes the address and no file offset is free."""
    if sym.source in BCC_TABLES:
        named = name_site(sym, index)
        if named is not None:
            return named._replace(vaddr=sym.address)
    stolen = namesake(sym.address, spans, index, dialect) if sym.address in spans.entry else None
    if sym.address in spans.entry and stolen is None:
        return Site(hex(sym.address), "address", vaddr=sym.address)
    offset = code.code_offset(elf_file, sym.address)
    if offset is None or spans.covers(offset):
        if stolen is not None:
            raise shared_name(sym, path or elf_file.name, stolen, dialect, "the entry of")
        return None
    why = dialect.namesake_reason(stolen[1]) if stolen else dialect.unsafe_reason(stripped_number=True)
    return offset_site(offset, why, sym.address)


def return_sites(
    sym: Symbol, elf_file: ElfFile, spans: Spans, path: str, index: NameIndex, dialect: Dialect
) -> list[Site]:
    """One site per RET of ``sym``: ``sym+N`` where the release checks it, else the RET's
    file offset; refused where bpftrace would misread that number."""
    rets = code.returns(elf_file, sym)
    if not rets:
        raise NotTraceable(f"--probe return: no RET instruction in {sym.name}", "probe its entry: --probe uprobe")
    if dialect.offset_probes and sym.address in spans.entry:
        # bpftrace reads a symbol there, so it checks a RET named inside it: by name+N where
        # the name keeps its offset, else by vaddr.
        by_name = sym.source in BCC_TABLES and dialect.keeps_offset(sym.name)
        named = [name_offset_site(sym, index, ret) for ret in rets] if by_name else []
        if named and all(named):
            return [n for n in named if n is not None]
        stolen = next(filter(None, (namesake(ret, spans, index, dialect) for ret in rets)), None)
        if stolen is None:
            return [Site(hex(ret), "address", vaddr=ret) for ret in rets]
    else:
        stolen = None
    offsets = [code.code_offset(elf_file, a) for a in rets]
    for ret, off in zip(rets, offsets):
        if (off is None or spans.covers(off)) and stolen is not None:
            raise shared_name(sym, path, stolen, dialect, "a RET of")
        if off is None or spans.covers(off):
            raise NotTraceable(
                f"--probe return: bpftrace {dialect.name} cannot probe the RET at 0x{ret:x} in {sym.name} ({path}): "
                "its file offset is also an address inside a symbol bpftrace reads, and it cannot check "
                "instruction boundaries there",
                dialect.return_hint(),
            )
    # With offset support, a file offset is used only where bpftrace reads no symbol for the
    # function, or its namesake would take the address.
    why = dialect.namesake_reason(stolen[1]) if stolen else dialect.unsafe_reason(stripped_number=dialect.offset_probes)
    return [offset_site(off, why, ret) for ret, off in zip(rets, offsets) if off is not None]


def attach_columns(path: str, info: ElfInfo, chosen: Sequence[Symbol]) -> list[tuple[str, str]]:
    """For -o wide: each function's file offset, and whether bpftrace can attach to it by
    name (a unique name from .symtab/.dynsym it can quote), only by address, or not at all
    ("-": another function of its name takes its address, and no file offset is free)."""
    from ctrace.elf.reader import open_elf

    elf_file = open_elf(path)
    index = NameIndex(info.symbols)
    index.count  # noqa: B018 - every name's count at once, not one search per function
    spans = bcc_visible(info, path)  # built only if a name is shared
    out = []
    for sym in chosen:
        offset = elf_file.vaddr_to_offset(sym.address)
        named = sym.source in ("symtab", "dynsym") and name_site(sym, index) is not None
        how = "name" if named else "address"
        if not named and index.of(sym.name) > 1:
            try:
                entry_site(sym, elf_file, spans, index, Dialect(), path)
            except SharedName:
                how = "-"
        out.append((f"0x{offset:x}" if offset is not None else "-", how))
    return out
