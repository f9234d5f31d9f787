"""The rows of ``ctrace symbols FILE`` in one pass of C, where the speedups are built.

elf.inspect makes a Symbol tuple per function of every source, sorts and merges
them, and render formats each: on a 75 MB Go binary that is ~140k tuples, and
on a machine where a cache miss is dear, most of the run goes to touching them.
Here the sources are handed to ctrace/elf/_speedups.c as they lie in the file
(symbol tables as bytes; the few functions that need Python, the Go table and
MiniDebugInfo, as Symbols), and it returns the rows render would print, byte for
byte (tests/test_listing.py holds the two to that on every fixture, the system
binaries and mutated files). None means: use elf.inspect and render, because the
speedups are not built (no compiler at install) or a name needs Python's rules.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from json.encoder import encode_basestring_ascii

from ctrace.elf import debuginfo, pclntab, speedups
from ctrace.elf.cache import Listing
from ctrace.elf.reader import NATIVE, SHT_DYNSYM, SHT_SYMTAB, ElfFile, open_elf
from ctrace.errors import CtraceError
from ctrace.model import Symbol

# ("table", data, strtab, is64, swap, label), ("symbols", [Symbol, ...]) or a Go table (pclntab.source)
Source = tuple[object, ...]


def build(path: str, fmt: str) -> Listing | None:
    """The listing of ``path`` as elf.inspect (root "/") and render.json_rows/text_rows make it."""
    if speedups.module is None:
        return None
    from ctrace import elf

    binary = open_elf(path)
    go = elf.is_go(binary)
    sources = tables(binary)
    own = len(sources)
    if go and binary.stripped:
        sources.append(pclntab.source(binary, _Symbols(binary)))
    debug_files = _debug_sources(binary, os.path.dirname(os.path.realpath(path)), sources)

    def classify(candidates: list[str], own_candidates: list[str]) -> tuple[str, dict[str, str]]:
        # elf.inspect decides the language from the binary's own tables alone, and
        # demangles the names of every source.
        language = "go" if go else elf.named_language(binary, own_candidates)
        return language, elf.demangled(language, candidates)

    made = speedups.module.listing(sources, own, fmt, encode_basestring_ascii, classify)
    if made is None:
        return None
    rows, counts, functions, language = made
    return Listing(binary.build_id, binary.stripped, language, counts, debug_files, functions, rows)


def tables(elf: ElfFile, label: str | None = None) -> list[Source]:
    """The .symtab and .dynsym of ``elf``, in section order, as ElfFile.symbols reads them."""
    out: list[Source] = []
    for sec in elf.sections:
        if sec.type in (SHT_SYMTAB, SHT_DYNSYM) and sec.link < len(elf.sections):
            name = label or ("symtab" if sec.type == SHT_SYMTAB else "dynsym")
            strings = elf.section_view(elf.sections[sec.link])
            out.append(("table", elf.section_view(sec), strings, elf.is64, elf.endian != NATIVE, name))
    return out


def _debug_sources(elf: ElfFile, binary_dir: str, sources: list[Source]) -> tuple[tuple[str, str], ...]:
    """debuginfo.collect's files, their tables appended to ``sources``."""
    found = debuginfo.locate(elf, binary_dir, ("/",))
    files = []
    if found is not None:
        source, path = found
        files.append(found)
        try:
            sources += tables(open_elf(path), source)
        except CtraceError:
            pass  # a damaged debug file costs its names (debuginfo._symbols_of)
    mini = debuginfo.minidebuginfo(elf)
    if mini:
        files.append(("minidebuginfo", f"{elf.name}:.gnu_debugdata"))
        sources.append(("symbols", mini))
    return tuple(files)


class _Symbols:
    """elf.symbols(), made only if iterated (the Go table's rare fallback for its text start)."""

    def __init__(self, elf: ElfFile) -> None:
        self.elf = elf

    def __iter__(self) -> Iterator[Symbol]:
        return iter(self.elf.symbols())
