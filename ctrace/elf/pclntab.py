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

The table is found as the .gopclntab section; else (Debian's dockerd and docker CLI: PIE,
externally linked, it lives inside .data.rel.ro) through ``runtime.firstmoduledata``,
which such a binary exports in .dynsym: the moduledata's first word points at the
header (``pcHeader`` in 1.16+, ``pclntable``'s data before); else by scanning the
non-executable PT_LOADs for a 4-aligned header magic whose pad, quantum and
pointer-size bytes fit (a scan of megabytes, where the symbol is one lookup). (A
``runtime.pclntab`` symbol would also mark it, but only in a .symtab, and ctrace reads
the table only when there is no .symtab: see elf.extra_sources.)

The 1.18+ functab (uint32 pairs, every Go in use) is decoded a column at a time as
elf/symtab.py does, a few times faster than entry by entry (benchmarks/README.md).
What is left is per function (a name slice, a Symbol tuple, and the one garbage
collection the new tuples cost afterwards). Older layouts, and tables that break an
assumption of the fast path, take the per-entry path.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import add, sub

from ctrace.elf import symtab
from ctrace.elf.reader import PT_LOAD, SHT_NOBITS, ElfFile
from ctrace.elf.symtab import NATIVE
from ctrace.model import Symbol
from ctrace.record import Record

Fn = Callable[[int], int]

MAGICS = {0xFFFFFFFB: 12, 0xFFFFFFFA: 116, 0xFFFFFFF0: 118, 0xFFFFFFF1: 120}
R_X86_64_RELATIVE = 8
SHT_RELA = 4
# Bytes whose two low bits are clear: deleting them from the low bytes of the funcoff
# column leaves nothing when every _func is 4-aligned.
_ALIGNED = bytes(range(0, 256, 4))


class Table(Record):
    """Where the table sits: its bytes from the header on and the header's vaddr."""

    data: bytes
    vaddr: int
    found: str  # "section", "moduledata" or "magic"


class Place(Record):
    """Where the table's bytes are in the file: [start, end), and the header's vaddr."""

    start: int
    end: int
    vaddr: int
    found: str


def functions(elf: ElfFile, symbols: Iterable[Symbol] = ()) -> list[Symbol]:
    """Functions of the Go table (source "pclntab"), or [] when there is none."""
    table = find(elf)
    if table is None:
        return []
    try:
        return parse(table, elf, symbols)
    except (struct.error, IndexError, ValueError):
        return []


def find(elf: ElfFile) -> Table | None:
    place = locate(elf)
    return None if place is None else Table(bytes(elf.data[place.start : place.end]), place.vaddr, place.found)


def locate(elf: ElfFile) -> Place | None:
    sec = elf.section(".gopclntab")
    if sec is not None and sec.size:
        if sec.type == SHT_NOBITS:
            return Place(0, 0, sec.addr, "section")  # no bytes in the file
        elf.section_view(sec)  # raises, as section_data does, for a section outside the file
        return Place(sec.offset, sec.offset + sec.size, sec.addr, "section")
    return _from_moduledata(elf) or _scan(elf)


def _from_moduledata(elf: ElfFile) -> Place | None:
    """The header ``runtime.firstmoduledata``'s first word points at, if plausible."""
    where = _symbol_value(elf, b"runtime.firstmoduledata")
    off = None if where is None else elf.vaddr_to_offset(where)
    width = 8 if elf.is64 else 4
    if where is None or off is None or off + width > len(elf.data):
        return None
    # In a PIE the word is 0 in the file and an R_X86_64_RELATIVE fills it at load.
    header = struct.unpack_from(elf.endian + ("Q" if elf.is64 else "I"), elf.data, off)[0]
    header = header or _relative_addend(elf, where)
    for seg in elf.segments:
        if header and seg.type == PT_LOAD and seg.vaddr <= header < seg.vaddr + seg.filesz:
            start, end = header - seg.vaddr + seg.offset, seg.offset + seg.filesz
            if not _plausible(elf, start):
                return None
            return Place(start, end, header, "moduledata")
    return None


def _symbol_value(elf: ElfFile, name: bytes) -> int | None:
    for sec, strings, _ in elf.symbol_tables():
        table, names = (sec.offset, sec.size), (strings.offset, strings.size)
        value = symtab.value_of(elf.data, name, table, names, elf.is64, elf.endian)
        if value:
            return value
    return None


def _scan(elf: ElfFile) -> Place | None:
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
                return Place(start, end, seg.vaddr + start - seg.offset, "magic")
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


def parse(table: Table, elf: ElfFile, symbols: Iterable[Symbol] = ()) -> list[Symbol]:
    layout = _layout(table, elf, symbols)
    if isinstance(layout, list):
        return layout
    nfunc, funcs, names, text = layout
    fast = _functab32(table.data, elf.endian, nfunc, funcs, names, text)
    if fast is not None:
        return fast
    u32 = elf.endian + "I"
    return _entries(table.data, funcs, funcs, nfunc, u32, 4, lambda e: text + e, lambda n: names[0] + n)


Layout = tuple[int, int, tuple[int, int], int]  # nfunc, functab offset, funcnametab (start, end), text start


def _layout(table: Table, elf: ElfFile, symbols: Iterable[Symbol]) -> list[Symbol] | Layout:
    """The functions of a pre-1.18 table, or where the parts of a 1.18+ one are."""
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
    text = _text_start(table, elf, symbols, field(2))
    return nfunc, field(7), (field(3), field(4)), text


def source(elf: ElfFile, symbols: Iterable[Symbol] = ()) -> tuple[object, ...]:
    """functions() as a source of elf/listing.py: a 1.18+ functab as its parts, which
    _speedups.c decodes checking what _functab32 checks (a table that fails a check
    sends the whole listing back to elf.inspect); any other table as its Symbols."""
    place = locate(elf)
    if place is None:
        return ("symbols", [])
    # A view, not find()'s copy (12-17 MB on containerd and dockerd), for the 1.18+
    # layouts, whose _layout reads only header fields; the older ones take functions().
    view = memoryview(elf.data)[place.start : place.end]
    try:
        if MAGICS.get(struct.unpack_from(elf.endian + "I", view)[0]) not in (118, 120):
            return ("symbols", functions(elf, symbols))
        layout = _layout(Table(view, place.vaddr, place.found), elf, symbols)  # type: ignore[arg-type]
    except (struct.error, IndexError, ValueError):
        return ("symbols", [])
    if isinstance(layout, list):
        return ("symbols", layout)
    nfunc, funcs, (start, end), text = layout
    if not (0 < nfunc and funcs + (nfunc + 1) * 8 <= len(view) and 0 <= text < 1 << 64):
        return ("symbols", functions(elf, symbols))  # _functab32 declines; the per-entry path decides
    start = min(start, len(view))  # as data[start:end] slices
    end = max(start, min(end, len(view)))
    return ("functab", view, nfunc, funcs, start, end, text, elf.endian != NATIVE)


def _functab32(
    data: bytes, endian: str, nfunc: int, funcs: int, names: tuple[int, int], text: int
) -> list[Symbol] | None:
    """The 1.18+ functab, a column at a time; None when the table breaks an assumption
    below (then _entries, the per-entry path, reads or rejects it the same way).

    ``funcs`` is where the functab and the _func records (funcoff is from there) start;
    ``names`` the funcnametab's start and end (the cutab's start)."""
    if nfunc <= 0:
        return None
    raw = data[funcs : funcs + (nfunc + 1) * 8]
    pairs = _u32(raw, endian)
    if len(pairs) != (nfunc + 1) * 2:
        return None
    entries, funcoffs = pairs[0::2], pairs[1:-1:2]
    lows = raw[4 : nfunc * 8 : 8] if endian == "<" else raw[7 : nfunc * 8 : 8]
    if lows.translate(None, _ALIGNED):  # a _func that is not 4-aligned
        return None
    nameoffs = _nameoffs(data, endian, funcs, funcoffs)
    region = data[names[0] : names[1]]
    if nameoffs is None or not region.endswith(b"\0") or min(nameoffs) < 0 or max(nameoffs) >= len(region):
        return None  # a name that does not end inside the funcnametab
    with symtab.gc_paused():
        starts = entries.tolist()  # ints made once, not once per use
        addresses = map(add, starts, repeat(text))
        sizes = map(sub, starts[1:], starts)
        found = zip(symtab.names_at(region, nameoffs), addresses, sizes, repeat("pclntab"))
        return list(map(symtab.NEW, repeat(Symbol), found))


def _nameoffs(data: bytes, endian: str, funcs: int, funcoffs: array[int]) -> list[int] | None:
    """Each _func's nameOff, the int32 after its entryOff: word funcoff/4 of those from funcs + 4."""
    body = memoryview(data)[funcs + 4 :]
    if endian == NATIVE:  # a view, no copy (the _func records are ~40% of the table)
        words: memoryview | array[int] = body[: len(body) // 4 * 4].cast("i")
    else:
        words = _u32(bytes(body[: max(funcoffs) + 4]), endian, "i")
    try:
        return [words[f >> 2] for f in funcoffs]
    except IndexError:
        return None


def _u32(raw: bytes, endian: str, code: str = "I") -> array[int]:
    """``raw`` as 32-bit words (array 'I' and 'i' are 4 bytes on every Linux ABI)."""
    words = array(code)
    words.frombytes(raw[: len(raw) - len(raw) % 4])
    if endian != NATIVE:
        words.byteswap()
    return words


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


def _text_start(table: Table, elf: ElfFile, symbols: Iterable[Symbol], header: int) -> int:
    field_vaddr = table.vaddr + 8 + 2 * table.data[7]
    relocated = _relative_addend(elf, field_vaddr)
    if relocated:
        return relocated
    if header:
        return header
    for sym in symbols:
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
        found = _sorted_lookup(data, where, elf.endian)
        if found is not None:
            return found
        pos = data.find(needle)
        while pos >= 0:  # memchr-fast, yet not free: dockerd has 244k relocations
            found = _relative_at(data, pos, elf.endian) if pos % 24 == 0 else None
            if found is not None:
                return found
            pos = data.find(needle, pos + 1)
    return None


def _sorted_lookup(data: bytes, where: int, endian: str) -> int | None:
    """A binary search for ``where``, in microseconds: ld and lld sort dynamic
    relocations by r_offset (-z combreloc). An unsorted table may be missed, not misread:
    a hit is a relocation at ``where`` either way."""
    offset = struct.Struct(endian + "Q").unpack_from
    lo, hi = 0, len(data) // 24
    while lo < hi:
        mid = (lo + hi) // 2
        if offset(data, mid * 24)[0] < where:
            lo = mid + 1
        else:
            hi = mid
    while lo < len(data) // 24 and offset(data, lo * 24)[0] == where:
        found = _relative_at(data, lo * 24, endian)
        if found is not None:
            return found
        lo += 1
    return None


def _relative_at(data: bytes, pos: int, endian: str) -> int | None:
    _, info, addend = struct.unpack_from(endian + "QQq", data, pos)
    return int(addend) if info & 0xFFFFFFFF == R_X86_64_RELATIVE else None
