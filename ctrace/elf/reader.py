"""A small struct-based ELF reader: headers, sections, segments, symbols, notes.

This is the fast path (issue "Speed"): pyelftools' import and its section objects
cost more than reading the symbols this way (benchmarks/README.md); the symbol tables
themselves are flat arrays that elf/symtab.py decodes a column at a time. The
reference for what this reader must return is pyelftools (tests/elf_reference.py
and the tests that compare the two).
"""

from __future__ import annotations

import mmap
import os
import stat
import struct

from ctrace.elf import symtab
from ctrace.errors import NotFound, NotTraceable
from ctrace.model import Symbol
from ctrace.record import Record

SHT_SYMTAB, SHT_NOTE, SHT_NOBITS, SHT_DYNSYM = 2, 7, 8, 11
PT_LOAD, PT_NOTE = 1, 4
DT_NEEDED, DT_STRTAB = 1, 5
NT_GNU_BUILD_ID = 3


class Section(Record):
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


class Segment(Record):
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class ElfFile:
    """Parsed headers of one ELF file; section data is sliced lazily from a mmap."""

    def __init__(self, data: bytes | mmap.mmap, name: str = "<elf>") -> None:
        self.data = data
        self.name = name
        if len(data) < 52 or data[:4] != b"\x7fELF":
            raise NotTraceable(f"{name} is not an ELF file")
        if data[4] not in (1, 2) or data[5] not in (1, 2):
            raise NotTraceable(f"{name} has an unknown ELF class or byte order")
        self.is64 = data[4] == 2
        self.endian = "<" if data[5] == 1 else ">"
        try:
            self._read_header()
            self.sections = self._read_sections()
            self.segments = self._read_segments()
        except struct.error as err:
            raise NotTraceable(f"{name} is a truncated or corrupt ELF file") from err
        self._by_name = {s.name: s for s in self.sections}

    def _read_header(self) -> None:
        e = self.endian
        if self.is64:
            fields = struct.unpack_from(e + "HHIQQQIHHHHHH", self.data, 16)
        else:
            fields = struct.unpack_from(e + "HHIIIIIHHHHHH", self.data, 16)
        self.type, self.machine = fields[0], fields[1]
        self.phoff, self.shoff = fields[4], fields[5]
        self.phentsize, self.phnum = fields[8], fields[9]
        self.shentsize, self.shnum, self.shstrndx = fields[10], fields[11], fields[12]

    def _read_sections(self) -> list[Section]:
        if not self.shoff or not self.shnum:
            return []
        fmt = self.endian + ("IIQQQQIIQQ" if self.is64 else "IIIIIIIIII")
        size = struct.calcsize(fmt)
        if self.shentsize < size or self.shoff + self.shnum * self.shentsize > len(self.data):
            raise NotTraceable(f"{self.name} has a section header table outside the file")
        raw = [struct.unpack_from(fmt, self.data, self.shoff + i * self.shentsize) for i in range(self.shnum)]
        names = b""
        if self.shstrndx < len(raw):
            strsec = raw[self.shstrndx]
            names = bytes(self.data[strsec[4] : strsec[4] + strsec[5]])
        return [Section(_cstr(names, r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[9]) for r in raw]

    def _read_segments(self) -> list[Segment]:
        if not self.phoff or not self.phnum:
            return []
        if self.is64:
            fmt, order = self.endian + "IIQQQQQQ", (0, 1, 2, 3, 5, 6)
        else:
            fmt, order = self.endian + "IIIIIIII", (0, 6, 1, 2, 4, 5)
        if self.phentsize < struct.calcsize(fmt) or self.phoff + self.phnum * self.phentsize > len(self.data):
            raise NotTraceable(f"{self.name} has a program header table outside the file")
        out = []
        for i in range(self.phnum):
            r = struct.unpack_from(fmt, self.data, self.phoff + i * self.phentsize)
            out.append(Segment(*(r[j] for j in order)))
        return out

    def section(self, name: str) -> Section | None:
        return self._by_name.get(name)

    def section_data(self, sec: Section) -> bytes:
        return bytes(self.section_view(sec))

    def section_view(self, sec: Section) -> memoryview:
        """section_data without the copy: a view of the mapped file."""
        if sec.type == SHT_NOBITS:
            return memoryview(b"")
        end = sec.offset + sec.size
        if end > len(self.data):
            raise NotTraceable(f"{self.name}: section {sec.name or '?'} lies outside the file")
        return memoryview(self.data)[sec.offset : end]

    def symbol_tables(self) -> list[tuple[Section, Section, str]]:
        """Each .symtab and .dynsym whose string table exists, in section order: the
        table, its string table, and the source its functions are listed under."""
        return [
            (sec, self.sections[sec.link], "symtab" if sec.type == SHT_SYMTAB else "dynsym")
            for sec in self.sections
            if sec.type in (SHT_SYMTAB, SHT_DYNSYM) and sec.link < len(self.sections)
        ]

    def symbols(self) -> list[Symbol]:
        """Traceable functions of .symtab and .dynsym (in section order), deduplicated by (name, address)."""
        found: list[Symbol] = []
        with symtab.gc_paused():
            for sec, strings, source in self.symbol_tables():
                strtab = self.section_data(strings)
                found += symtab.functions(self.section_data(sec), strtab, self.is64, self.endian, source)
            return symtab.sorted_unique(found)

    def first_function(self, name: str) -> int | None:
        """The address of the first function named ``name`` in table order (the tables in
        section order, as bcc walks them), or None."""
        for sec, strings, source in self.symbol_tables():
            table = symtab.functions(self.section_data(sec), self.section_data(strings), self.is64, self.endian, source)
            hit = next((s.address for s in table if s.name == name), None)
            if hit is not None:
                return hit
        return None

    @property
    def stripped(self) -> bool:
        return not any(s.type == SHT_SYMTAB for s in self.sections)

    def notes(self) -> list[tuple[bytes, int, bytes]]:
        """(name, type, desc) of every note, from sections or, if none, PT_NOTE segments."""
        blobs = [self.section_data(s) for s in self.sections if s.type == SHT_NOTE]
        if not blobs:
            blobs = [bytes(self.data[p.offset : p.offset + p.filesz]) for p in self.segments if p.type == PT_NOTE]
        return [n for blob in blobs for n in _parse_notes(blob, self.endian)]

    @property
    def build_id(self) -> str | None:
        for name, ntype, desc in self.notes():
            if name == b"GNU" and ntype == NT_GNU_BUILD_ID:
                return desc.hex()
        return None

    def needed(self) -> list[str]:
        """DT_NEEDED libraries from .dynamic."""
        dyn = self.section(".dynamic")
        if dyn is None or dyn.link >= len(self.sections):
            return []
        strtab = self.section_data(self.sections[dyn.link])
        fmt = self.endian + ("qQ" if self.is64 else "iI")
        data = self.section_data(dyn)
        usable = len(data) - len(data) % struct.calcsize(fmt)
        return [_cstr(strtab, val) for tag, val in struct.iter_unpack(fmt, data[:usable]) if tag == DT_NEEDED]

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset of a virtual address, through the PT_LOAD that maps it."""
        for seg in self.segments:
            if seg.type == PT_LOAD and seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        return None


def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    if end < 0:
        end = len(table)
    return table[offset:end].decode("utf-8", "surrogateescape")


def _parse_notes(blob: bytes, endian: str) -> list[tuple[bytes, int, bytes]]:
    out = []
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from(endian + "III", blob, pos)
        pos += 12
        name = blob[pos : pos + namesz].rstrip(b"\0")
        pos += (namesz + 3) & ~3
        desc = blob[pos : pos + descsz]
        pos += (descsz + 3) & ~3
        out.append((name, ntype, desc))
    return out


def open_elf(path: str) -> ElfFile:
    """Open and map ``path``; refuses directories, devices and FIFOs without blocking."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist") from None
    except PermissionError:
        raise NotTraceable(f"permission denied reading {path}", "run ctrace as root") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise NotTraceable(f"{path} is {kind}", "give the path of an executable or shared library")
    try:
        with open(path, "rb") as f:
            if st.st_size == 0:
                return ElfFile(b"", path)
            return ElfFile(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), path)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist (any more)") from None
    except PermissionError:
        raise NotTraceable(f"permission denied reading {path}", "run ctrace as root") from None
