"""Which number makes bpftrace 0.17 attach where we mean, for functions it cannot name.

Measured with Debian's bpftrace 0.17 (built without instruction-boundary checks):
given ``uprobe:FILE:N`` it asks bcc for a symbol of FILE covering N as a *virtual
address* (bcc reads .symtab, .dynsym and a debug file it finds by build-id on the
host or by .gnu_debuglink next to FILE; not MiniDebugInfo, not Go's table).
- a symbol starts at N: N is that function's entry, no --unsafe needed;
- a symbol covers N past its start: refused, even with --unsafe ("Can't check if
  uprobe is in proper place (compiled without (k|u)probe offset support)");
- no symbol covers N: with --unsafe, N is taken as a FILE OFFSET.
So an entry is named by its virtual address when bcc knows a symbol there, else by
its file offset when no symbol covers that number; a RET inside a function only by
its file offset, and only when no symbol covers it.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from itertools import accumulate, repeat
from operator import add, itemgetter

from ctrace import emit
from ctrace.elf import ElfInfo, code
from ctrace.elf.debuginfo import DEBUG_ROOT
from ctrace.elf.reader import ElfFile
from ctrace.errors import NotTraceable
from ctrace.model import Symbol

_BCC_TABLES = ("symtab", "dynsym")
_ADDRESS, _SIZE, _FIRST, _SECOND = itemgetter(1), itemgetter(2), itemgetter(0), itemgetter(1)


class Spans:
    """The functions bcc will see, for 'does one start at / cover this address?'.

    Built on first use: most functions are attached by name and never ask, and a
    42 MB Go binary's 35k symbols cost ~10 ms per path form to sort.
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
    return Spans(info.symbols, frozenset((*_BCC_TABLES, *seen)))


def entry_site(sym: Symbol, elf_file: ElfFile, spans: Spans) -> emit.Site | None:
    if sym.address in spans.entry:
        return emit.Site(hex(sym.address), "address")
    offset = code.code_offset(elf_file, sym.address)
    if offset is None or spans.covers(offset):
        return None
    return emit.offset_site(offset)


def return_sites(sym: Symbol, elf_file: ElfFile, spans: Spans, path: str) -> list[emit.Site]:
    """One file-offset site per RET of ``sym``; refused where bpftrace would misread one."""
    rets = code.returns(elf_file, sym)
    if not rets:
        raise NotTraceable(f"--probe return: no RET instruction in {sym.name}", "probe its entry: --probe uprobe")
    offsets = [code.code_offset(elf_file, a) for a in rets]
    for ret, off in zip(rets, offsets):
        if off is None or spans.covers(off):
            raise NotTraceable(
                f"--probe return: bpftrace 0.17 cannot probe the RET at 0x{ret:x} in {sym.name} ({path}): "
                "its file offset is also an address inside a symbol bpftrace reads, and it cannot check "
                "instruction boundaries there",
                "use --probe uretprobe (not for Go), or probe a copy stripped of .symtab and debug links",
            )
    return [emit.offset_site(off) for off in offsets if off is not None]
