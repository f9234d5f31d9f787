"""Go function tables (.gopclntab): names and entry addresses that survive ``-ldflags=-s -w``.

Layouts read (Go's src/debug/gosym/pclntab.go is the reference):
- 1.2-1.15 (magic 0xfffffffb): functab of (entry uintptr, funcoff uintptr) pairs right
  after the header; names are offsets into the whole table.
- 1.16-1.17 (0xfffffffa): the header holds offsets to funcnametab and the functab
  (pclntab); functab entries are uintptr pairs.
- 1.18-1.19 (0xfffffff0) and 1.20+ (0xfffffff1): functab entries are uint32 offsets
  from the start of text. The header's textStart is unrelocated in a PIE (0 in the
  file, an R_X86_64_RELATIVE fills it at load), which is why debug/gosym ignores it;
  we take it from that relocation, else the header, else ``runtime.text`` or .text.

The table is found as the .gopclntab section or (Debian's dockerd and docker CLI: PIE,
externally linked, it lives inside .data.rel.ro) by scanning the non-executable PT_LOADs
for a 4-aligned header magic whose pad, quantum and pointer-size bytes fit. (A
``runtime.pclntab`` symbol would also mark it, but only in a .symtab, and ctrace reads
the table only when there is no .symtab: see elf.extra_sources.)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from ctrace.elf.reader import PT_LOAD, ElfFile
from ctrace.model import Symbol

Fn = Callable[[int], int]

MAGICS = {0xFFFFFFFB: 12, 0xFFFFFFFA: 116, 0xFFFFFFF0: 118, 0xFFFFFFF1: 120}
R_X86_64_RELATIVE = 8
SHT_RELA = 4


class Table(NamedTuple):
    """Where the table sits: its bytes from the header on and the header's vaddr."""

    data: bytes
    vaddr: int
    found: str  # "section" or "magic"


def functions(elf: ElfFile, symtab: tuple[Symbol, ...] = ()) -> list[Symbol]:
    """Functions of the Go table (source "pclntab"), or [] when there is none."""
    table = find(elf)
    if table is None:
        return []
    try:
        return parse(table, elf, symtab)
    except (struct.error, IndexError, ValueError):
        return []


def find(elf: ElfFile) -> Table | None:
    sec = elf.section(".gopclntab")
    if sec is not None and sec.size:
        return Table(elf.section_data(sec), sec.addr, "section")
    return _scan(elf)


def _scan(elf: ElfFile) -> Table | None:
    """The first plausible header in a non-executable PT_LOAD (where Go puts rodata).

    One pass for the bytes all four magics share with the zero pad (0xffffff then
    0x0000, in the file's byte order), then a check of the magic's own byte."""
    little = elf.endian == "<"
    tail = b"\xff\xff\xff\x00\x00" if little else b"\xff\xff\xff"
    lead = 1 if little else 0  # where the tail starts relative to the header
    for seg in elf.segments:
        if seg.type != PT_LOAD or seg.flags & 1:  # PF_X: code, not data
            continue
        end = seg.offset + seg.filesz
        pos = elf.data.find(tail, seg.offset + lead, end)
        while pos >= 0:
            start = pos - lead
            if start % 4 == 0 and _plausible(elf, start):
                return Table(bytes(elf.data[start:end]), seg.vaddr + start - seg.offset, "magic")
            pos = elf.data.find(tail, pos + 1, end)
    return None


def _plausible(elf: ElfFile, pos: int) -> bool:
    if pos + 16 > len(elf.data) or struct.unpack_from(elf.endian + "I", elf.data, pos)[0] not in MAGICS:
        return False
    pad, quantum, ptr = elf.data[pos + 4 : pos + 6], elf.data[pos + 6], elf.data[pos + 7]
    if pad != b"\0\0" or quantum not in (1, 2, 4) or ptr not in (4, 8):
        return False
    nfunc = struct.unpack_from(elf.endian + ("Q" if ptr == 8 else "I"), elf.data, pos + 8)[0]
    return bool(0 < nfunc < 10_000_000)


def parse(table: Table, elf: ElfFile, symtab: tuple[Symbol, ...] = ()) -> list[Symbol]:
    data = table.data
    version = MAGICS.get(struct.unpack_from(elf.endian + "I", data)[0])
    if version is None:
        return []
    ptr = data[7]
    word = elf.endian + ("Q" if ptr == 8 else "I")

    def field(i: int) -> int:
        return int(struct.unpack_from(word, data, 8 + i * ptr)[0])

    nfunc = field(0)
    if version == 12:
        return _entries(data, 8 + ptr, 0, nfunc, word, ptr, lambda e: e, lambda n: n)
    if version == 116:
        names, funcs = field(2), field(6)
        return _entries(data, funcs, funcs, nfunc, word, ptr, lambda e: e, lambda n: names + n)
    text = _text_start(table, elf, symtab, field(2))
    names, funcs = field(3), field(7)
    u32 = elf.endian + "I"
    return _entries(data, funcs, funcs, nfunc, u32, 4, lambda e: text + e, lambda n: names + n)


def _entries(data: bytes, tab: int, base: int, nfunc: int, fmt: str, width: int, pc: Fn, name_at: Fn) -> list[Symbol]:
    """Symbols from a functab of (entry, funcoff) pairs; size runs to the next entry."""
    pairs = list(struct.iter_unpack(fmt + fmt[-1], data[tab : tab + (nfunc + 1) * 2 * width]))
    nameoff = struct.Struct(fmt[0] + "i").unpack_from
    find = data.index
    out = []
    for i in range(nfunc):
        entry, funcoff = pairs[i]
        start = name_at(nameoff(data, base + funcoff + width)[0])
        name = data[start : find(b"\0", start)].decode("utf-8", "surrogateescape")
        out.append(Symbol(name, pc(entry), pairs[i + 1][0] - entry, "pclntab"))
    return out


def _text_start(table: Table, elf: ElfFile, symtab: tuple[Symbol, ...], header: int) -> int:
    field_vaddr = table.vaddr + 8 + 2 * table.data[7]
    relocated = _relative_addend(elf, field_vaddr)
    if relocated:
        return relocated
    if header:
        return header
    for sym in symtab:
        if sym.name == "runtime.text":
            return sym.address
    sec = elf.section(".text")
    return sec.addr if sec is not None else 0


def _relative_addend(elf: ElfFile, where: int) -> int | None:
    """The addend of an R_X86_64_RELATIVE at ``where`` (what the loader writes there)."""
    if not elf.is64 or elf.machine != 62:  # EM_X86_64
        return None
    needle = struct.pack(elf.endian + "Q", where)
    for sec in elf.sections:
        if sec.type != SHT_RELA or sec.entsize != 24:
            continue
        data = elf.section_data(sec)
        pos = data.find(needle)
        while pos >= 0:  # memchr-fast: dockerd has ~10^5 relocations
            if pos % 24 == 0:
                _, info, addend = struct.unpack_from(elf.endian + "QQq", data, pos)
                if info & 0xFFFFFFFF == R_X86_64_RELATIVE:
                    return int(addend)
            pos = data.find(needle, pos + 1)
    return None
