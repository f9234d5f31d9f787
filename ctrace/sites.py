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
number; a RET inside a function by ``sym+N`` where the release checks it, else by its
file offset, and only when no symbol covers it.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add, itemgetter

from ctrace import emit
from ctrace.dialect import Dialect
from ctrace.elf import ElfInfo, code
from ctrace.elf.debuginfo import DEBUG_ROOT
from ctrace.elf.reader import ElfFile
from ctrace.errors import NotTraceable
from ctrace.model import Symbol

BCC_TABLES = ("symtab", "dynsym")  # the symbol tables bpftrace itself names functions from
_ADDRESS, _SIZE, _FIRST, _SECOND = itemgetter(1), itemgetter(2), itemgetter(0), itemgetter(1)


class Spans:
    """The functions bcc will see, for 'does one start at / cover this address?'.

    Built on first use: most functions are attached by name and never ask, and sorting a
    large Go binary's symbols for each path form is time a user would wait for.
    """

    def __init__(self, symbols: Sequence[Symbol], sources: frozenset[str] | None = None) -> None:
        self._symbols = symbols
        self._sources = sources  # None: every symbol
        self._starts: list[int] | None = None
        self._reach: list[int] = []
        self._entry: set[int] = set()

    def _build(self) -> list[int]:
        chosen = self._symbols
        if self._sources is not None:
            keep = self._sources
            chosen = [s for s in chosen if s.source in keep]
        ordered = sorted(
            zip(map(_ADDRESS, chosen), map(add, map(_ADDRESS, chosen), map(max, map(_SIZE, chosen), repeat(1))))
        )
        starts = list(map(_FIRST, ordered))
        self._reach = list(accumulate(map(_SECOND, ordered), max))  # the farthest end so far
        self._entry = set(starts)
        self._starts = starts
        return starts

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
    return Spans(info.symbols, frozenset((*BCC_TABLES, *seen)))


def entry_site(
    sym: Symbol, elf_file: ElfFile, spans: Spans, index: emit.NameIndex, dialect: Dialect
) -> emit.Site | None:
    """The function's entry: by name where bpftrace reads that name and it is exact, else
    by its virtual address where a symbol bpftrace reads starts there, else by file offset."""
    if sym.source in BCC_TABLES:
        named = emit.name_site(sym, index)
        if named is not None:
            return named._replace(vaddr=sym.address)
    if sym.address in spans.entry:
        return emit.Site(hex(sym.address), "address", vaddr=sym.address)
    offset = code.code_offset(elf_file, sym.address)
    if offset is None or spans.covers(offset):
        return None
    return emit.offset_site(offset, dialect.unsafe_reason(stripped_number=True), sym.address)


def return_sites(
    sym: Symbol, elf_file: ElfFile, spans: Spans, path: str, index: emit.NameIndex, dialect: Dialect
) -> list[emit.Site]:
    """One site per RET of ``sym``: ``sym+N`` where the release checks it, else the RET's
    file offset; refused where bpftrace would misread that number."""
    rets = code.returns(elf_file, sym)
    if not rets:
        raise NotTraceable(f"--probe return: no RET instruction in {sym.name}", "probe its entry: --probe uprobe")
    if dialect.offset_probes and sym.address in spans.entry:
        # bpftrace reads a symbol there, so it checks a RET named inside it: by name+N, else by vaddr.
        named = [emit.name_offset_site(sym, index, ret) for ret in rets] if sym.source in BCC_TABLES else []
        if named and all(named):
            return [n for n in named if n is not None]
        return [emit.Site(hex(ret), "address", vaddr=ret) for ret in rets]
    offsets = [code.code_offset(elf_file, a) for a in rets]
    for ret, off in zip(rets, offsets):
        if off is None or spans.covers(off):
            raise NotTraceable(
                f"--probe return: bpftrace {dialect.name} cannot probe the RET at 0x{ret:x} in {sym.name} ({path}): "
                "its file offset is also an address inside a symbol bpftrace reads, and it cannot check "
                "instruction boundaries there",
                dialect.return_hint(),
            )
    # With offset support, a file offset is used only where bpftrace reads no symbol for the function.
    why = dialect.unsafe_reason(stripped_number=dialect.offset_probes)
    return [emit.offset_site(off, why, ret) for ret, off in zip(rets, offsets) if off is not None]
