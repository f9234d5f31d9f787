"""Write small synthetic ELF files: 32/64-bit, little/big-endian, any machine.

The compilers here only make x86-64 little-endian files; the reader must also
handle the other layouts (and pyelftools, the reference, reads them all).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

EM_X86_64, EM_386, EM_ARM, EM_AARCH64, EM_PPC64, EM_S390 = 62, 3, 40, 183, 21, 22
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOTE, SHT_DYNSYM = 1, 2, 3, 7, 11
STT_FUNC, STT_OBJECT, STT_GNU_IFUNC = 2, 1, 10


def _strtab(names: Sequence[str]) -> tuple[bytes, dict[str, int]]:
    blob, offsets = b"\0", {}
    for name in names:
        if name not in offsets:
            offsets[name] = len(blob)
            blob += name.encode() + b"\0"
    return blob, offsets


def build(
    funcs: Sequence[tuple[str, int, int]],
    is64: bool = True,
    big: bool = False,
    machine: int = EM_X86_64,
    dynamic: Sequence[tuple[str, int, int]] = (),
    build_id: bytes = b"\x12\x34\x56\x78" * 5,
) -> bytes:
    """An ELF executable whose .symtab holds ``funcs`` (name, address, size) plus an OBJECT."""
    e = ">" if big else "<"
    sym_fmt = e + ("IBBHQQ" if is64 else "IIIBBH")
    text_addr = 0x400000

    def symtab(entries: Sequence[tuple[str, int, int]]) -> tuple[bytes, bytes]:
        strs, offs = _strtab([n for n, _, _ in entries] + ["an_object"])
        rows = [(0, 0, 0, 0, 0, 0)]
        rows += [(offs[n], (1 << 4) | STT_FUNC, 0, 1, a, s) for n, a, s in entries]
        rows.append((offs["an_object"], (1 << 4) | STT_OBJECT, 0, 1, text_addr + 0x100, 8))
        if is64:
            data = b"".join(struct.pack(sym_fmt, *r) for r in rows)
        else:
            data = b"".join(struct.pack(sym_fmt, r[0], r[4], r[5], r[1], r[2], r[3]) for r in rows)
        return data, strs

    note = struct.pack(e + "III", 4, len(build_id), 3) + b"GNU\0" + build_id
    sections: list[tuple[str, int, bytes, int, int]] = [("", 0, b"", 0, 0)]  # name, type, data, link, entsize
    sections.append((".text", SHT_PROGBITS, b"\xc3" * 0x200, 0, 0))
    sections.append((".note.gnu.build-id", SHT_NOTE, note, 0, 0))
    syms, strs = symtab(funcs)
    sections.append((".symtab", SHT_SYMTAB, syms, len(sections) + 1, 24 if is64 else 16))
    sections.append((".strtab", SHT_STRTAB, strs, 0, 0))
    if dynamic:
        dsyms, dstrs = symtab(dynamic)
        sections.append((".dynsym", SHT_DYNSYM, dsyms, len(sections) + 1, 24 if is64 else 16))
        sections.append((".dynstr", SHT_STRTAB, dstrs, 0, 0))
    shstr, shoffs = _strtab([s[0] for s in sections] + [".shstrtab"])
    sections.append((".shstrtab", SHT_STRTAB, shstr, 0, 0))

    ehsize, phentsize = (64, 56) if is64 else (52, 32)
    body = b""
    offsets = []
    pos = ehsize + phentsize
    for _, _, data, _, _ in sections:
        pos += (-pos) % 8
        body += b"\0" * ((pos - ehsize - phentsize) - len(body))
        offsets.append(pos)
        body += data
        pos += len(data)
    shoff = pos + (-pos) % 8
    body += b"\0" * (shoff - ehsize - phentsize - len(body))

    shdrs = b""
    for i, (name, stype, data, link, entsize) in enumerate(sections):
        addr = text_addr if name == ".text" else 0
        fields = (shoffs[name] if name else 0, stype, 6 if name == ".text" else 0, addr, offsets[i], len(data), link)
        if is64:
            shdrs += struct.pack(e + "IIQQQQIIQQ", *fields, 0, 16, entsize)
        else:
            shdrs += struct.pack(e + "IIIIIIIIII", *fields, 0, 4, entsize)
    text_off = offsets[1]
    if is64:
        phdr = struct.pack(e + "IIQQQQQQ", 1, 5, text_off, text_addr, text_addr, 0x200, 0x200, 0x1000)
    else:
        phdr = struct.pack(e + "IIIIIIII", 1, text_off, text_addr, text_addr, 0x200, 0x200, 5, 0x1000)
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 2 if big else 1, 1, 0]) + b"\0" * 8
    shnum, shstrndx = len(sections), len(sections) - 1
    if is64:
        hdr = ident + struct.pack(
            e + "HHIQQQIHHHHHH", 2, machine, 1, text_addr, ehsize, shoff, 0, ehsize, phentsize, 1, 64, shnum, shstrndx
        )
    else:
        hdr = ident + struct.pack(
            e + "HHIIIIIHHHHHH", 2, machine, 1, text_addr, ehsize, shoff, 0, ehsize, phentsize, 1, 40, shnum, shstrndx
        )
    return hdr + phdr + body + shdrs
