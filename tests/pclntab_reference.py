"""The per-entry .gopclntab reader ctrace used before the column-at-a-time one: the
reference the fast path in ctrace/elf/pclntab.py must equal (same list, same order).

Kept as it was (a magic scan to find the table, struct.unpack_from and bytes.index per
function, a linear search of the relocations) apart from names; do not speed it up.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ctrace.elf.pclntab import MAGICS, R_X86_64_RELATIVE, SHT_RELA, Table, _plausible
from ctrace.elf.reader import PT_LOAD, ElfFile
from ctrace.model import Symbol

Fn = Callable[[int], int]


def reference_functions(elf: ElfFile, symtab: tuple[Symbol, ...] = ()) -> list[Symbol]:
    sec = elf.section(".gopclntab")
    table = Table(elf.section_data(sec), sec.addr, "section") if sec is not None and sec.size else reference_scan(elf)
    if table is None:
        return []
    try:
        return reference_parse(table, elf, symtab)
    except (struct.error, IndexError, ValueError):
        return []


def reference_scan(elf: ElfFile) -> Table | None:
    little = elf.endian == "<"
    tail = b"\xff\xff\xff\x00\x00" if little else b"\xff\xff\xff"
    lead = 1 if little else 0
    for seg in elf.segments:
        if seg.type != PT_LOAD or seg.flags & 1:
            continue
        end = seg.offset + seg.filesz
        pos = elf.data.find(tail, seg.offset + lead, end)
        while pos >= 0:
            start = pos - lead
            if start % 4 == 0 and _plausible(elf, start):
                return Table(bytes(elf.data[start:end]), seg.vaddr + start - seg.offset, "magic")
            pos = elf.data.find(tail, pos + 1, end)
    return None


def reference_parse(table: Table, elf: ElfFile, symtab: tuple[Symbol, ...] = ()) -> list[Symbol]:
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
    if not elf.is64 or elf.machine != 62:
        return None
    needle = struct.pack(elf.endian + "Q", where)
    for sec in elf.sections:
        if sec.type != SHT_RELA or sec.entsize != 24:
            continue
        data = elf.section_data(sec)
        pos = data.find(needle)
        while pos >= 0:
            if pos % 24 == 0:
                _, info, addend = struct.unpack_from(elf.endian + "QQq", data, pos)
                if info & 0xFFFFFFFF == R_X86_64_RELATIVE:
                    return int(addend)
            pos = data.find(needle, pos + 1)
    return None
