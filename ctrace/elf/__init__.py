"""What a binary offers a uprobe: its functions, build-id, strip state and language."""

from __future__ import annotations

import bisect
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress
from operator import itemgetter, ne

from ctrace.elf import symtab

# Kinds, _kinds and rust_legacy_names live in mangling.py (demangle.py reads them there); kept here by name.
from ctrace.elf.mangling import Kinds as Kinds
from ctrace.elf.mangling import _kinds as _kinds
from ctrace.elf.mangling import kinds
from ctrace.elf.mangling import rust_legacy_names as rust_legacy_names
from ctrace.elf.reader import ElfFile, open_elf
from ctrace.model import Binary, Symbol
from ctrace.record import Record

__all__ = ["ElfInfo", "ElfFile", "file_binary", "inspect", "language"]

_NAME, _ADDRESS, _SOURCE = itemgetter(0), itemgetter(1), itemgetter(3)
_ADDRESS_NAME, _NAME_ADDRESS = itemgetter(1, 0), itemgetter(0, 1)


class ElfInfo(Record):
    path: str
    symbols: Sequence[Symbol]  # a tuple, or from the cache elf/columns.Columns
    build_id: str | None
    stripped: bool
    language: str
    pie: bool
    debug_files: tuple[tuple[str, str], ...] = ()  # (source, path) of each debug file read
    demangled: Mapping[str, str] = {}  # mangled -> readable

    def sources(self) -> dict[str, int]:
        """Functions per source, in order of first appearance."""
        return dict(Counter(map(_SOURCE, self.symbols)))


def inspect(path: str, root: str = "/", binary_dir: str | None = None) -> ElfInfo:
    """``root`` is the container root debug files are looked for in first;
    ``binary_dir`` the binary's directory as seen inside it (for .gnu_debuglink)."""
    elf = open_elf(path)
    symbols = tuple(elf.symbols())
    lang = language(elf, symbols)
    extra, debug_files = extra_sources(elf, symbols, lang, root, binary_dir or os.path.dirname(os.path.realpath(path)))
    symbols = merge(symbols, extra)
    return ElfInfo(
        path=path,
        symbols=symbols,
        build_id=elf.build_id,
        stripped=elf.stripped,
        language=lang,
        pie=elf.type == 3,  # ET_DYN: a PIE executable or a shared library
        debug_files=debug_files,
        demangled=demangled(lang, map(_NAME, symbols)),
    )


def demangled(lang: str, names: Iterable[str]) -> dict[str, str]:
    """mangled -> readable, for a C++ or Rust binary.

    Only C++ and Rust have mangled names ("c" is decided by their absence, see
    language()); not looking at 70k Go names saves a pass. A cgo binary's C++
    names stay mangled.
    """
    if lang not in ("c++", "rust"):
        return {}
    from ctrace.elf import demangle

    return demangle.demangle_all(names)


def extra_sources(
    elf: ElfFile, symbols: tuple[Symbol, ...], lang: str, root: str, binary_dir: str
) -> tuple[list[Symbol], tuple[tuple[str, str], ...]]:
    """Functions beyond .symtab/.dynsym: the Go table, debug files, MiniDebugInfo."""
    from ctrace.elf import debuginfo, pclntab

    # An unstripped Go binary's .symtab already lists its functions; the table is
    # read only when it is gone (-ldflags=-s -w), which keeps big Go binaries fast.
    extra = pclntab.functions(elf, symbols) if lang == "go" and elf.stripped else []
    roots = tuple(dict.fromkeys((root, "/")))
    found = debuginfo.collect(elf, binary_dir, roots)
    for item in found:
        extra += item.symbols
    return extra, tuple((item.source, item.path) for item in found)


def merge(first: tuple[Symbol, ...], more: list[Symbol]) -> tuple[Symbol, ...]:
    """``first`` plus what ``more`` adds, deduplicated by (name, address), in (address, name) order.

    ``first`` is elf.symbols(): sorted and unique already. Most of ``more`` (a Go
    table, a debug file) repeats it, so only what ``first`` lacks is looked at one
    by one, and spliced in where it sorts. The repeats are found by address, not by
    name: an int key hashes for free, where hashing 140k fresh 60-character names
    was most of the merge; equal names then compare without a hash.
    """
    if not more:
        return first
    named = dict(zip(map(_ADDRESS, first), map(_NAME, first)))  # an address's last name: most have one
    unsure = list(compress(more, map(ne, map(named.get, map(_ADDRESS, more)), map(_NAME, more))))
    if not unsure:
        return first
    with symtab.gc_paused():
        at = set(map(_ADDRESS, unsure))  # addresses where ``first`` may hold the name under another alias
        seen = set(map(_NAME_ADDRESS, compress(first, map(at.__contains__, map(_ADDRESS, first)))))
        added: list[Symbol] = []
        for sym in sorted(unsure, key=_ADDRESS_NAME):
            key = (sym.name, sym.address)
            if key not in seen:
                seen.add(key)
                added.append(sym)
        return _splice(first, added)


def _splice(first: tuple[Symbol, ...], added: list[Symbol]) -> tuple[Symbol, ...]:
    """Both sorted by (address, name), none of ``added`` in ``first``: one sorted tuple."""
    addresses = list(map(_ADDRESS, first))
    out: list[Symbol] = []
    done = 0
    for sym in added:
        at = bisect.bisect_left(addresses, sym.address, done)
        while at < len(first) and first[at].address == sym.address and first[at].name < sym.name:
            at += 1  # within a run of one address, by name
        out.extend(first[done:at])
        out.append(sym)
        done = at
    out.extend(first[done:])
    return tuple(out)


def file_binary(path: str, build_id: str | None, stripped: bool, language: str) -> Binary:
    """The Binary of a file named on the command line (not a process's)."""
    real = os.path.realpath(path)
    return Binary(real, real, None, build_id, stripped, language)


_GO_SECTIONS = (".gopclntab", ".go.buildinfo", ".note.go.buildid")


def language(elf: ElfFile, symbols: tuple[Symbol, ...]) -> str:
    """'go', 'rust', 'c++' or 'c', from evidence in the file, strongest first."""
    return "go" if is_go(elf) else named_language(elf, [s.name for s in symbols])


def is_go(elf: ElfFile) -> bool:
    return any(elf.section(name) for name in _GO_SECTIONS) or any(n == b"Go" for n, _, _ in elf.notes())


def named_language(elf: ElfFile, names: list[str]) -> str:
    """'rust', 'c++' or 'c' for a binary that is not Go, from its function names (those
    that may be mangled are enough) and its .comment and DT_NEEDED."""
    found = kinds(names)
    # Rust: v0 (_R) names, its runtime's, or legacy mangling (every path ends in a 17h<16 hex digits>E hash)
    if found.v0 or found.runtime or found.legacy or _comment_mentions(elf, b"rustc"):
        return "rust"
    needed = elf.needed()
    if any(n.startswith(("libstdc++", "libc++")) for n in needed) or found.itanium:
        return "c++"
    return "c"


def _comment_mentions(elf: ElfFile, word: bytes) -> bool:
    sec = elf.section(".comment")
    return sec is not None and word in elf.section_data(sec)
