"""Bulk decoding of ELF symbol tables: whole columns at a time, no per-entry Python code.

A symbol table is a flat array of fixed-size records. Instead of unpacking each
record (``struct.iter_unpack`` plus a Python loop per entry, which dominates on a
binary with 10^5 entries), this module reads it as arrays of 32- and 64-bit words,
takes every field as a strided slice, keeps the functions with ``itertools.compress``
and slices the names out of one decoded string table. Timings: benchmarks/README.md.
"""

from __future__ import annotations

import gc
import mmap
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import compress, repeat
from operator import eq, itemgetter

from ctrace.elf import speedups
from ctrace.model import Symbol

STT_FUNC, STT_GNU_IFUNC = 2, 10
# st_info byte -> 1 when its low nibble is FUNC or GNU_IFUNC: one bytes.translate
# turns the strided st_info column into a selector for compress().
_IS_FUNC = bytes(1 if (b & 0xF) in (STT_FUNC, STT_GNU_IFUNC) else 0 for b in range(256))
NATIVE = "<" if sys.byteorder == "little" else ">"  # this machine's byte order, struct-style
_ADDRESS = itemgetter(1)
_NAME = itemgetter(0)
NEW = tuple.__new__  # Symbol(...) runs a Python-level __new__; this does not


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while tens of thousands of Symbol tuples are made.

    Each tuple is GC-tracked, so 70k of them trigger ~100 collections that
    find nothing, and nearly double the time to build them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _words(code: str, data: bytes, endian: str) -> array[int]:
    words = array(code)
    words.frombytes(data)
    if endian != NATIVE:
        words.byteswap()
    return words


def functions(data: bytes, strtab: bytes, is64: bool, endian: str, source: str) -> list[Symbol]:
    """FUNC and IFUNC entries with a nonzero value, in table order.

    An undefined function with a value is a canonical PLT entry in a non-PIC
    executable; bpftrace lists (and attaches to) those too, so st_shndx is not
    looked at.
    """
    if speedups.module is not None:
        return speedups.module.functions(data, strtab, is64, endian != NATIVE, source, Symbol)
    entsize = 24 if is64 else 16
    data = data[: len(data) - len(data) % entsize]
    narrow = _words("I", data, endian)  # array('I') is 4 bytes on every Linux ABI
    if is64:  # Elf64_Sym: name u32, info u8, other u8, shndx u16, value u64, size u64
        wide = _words("Q", data, endian)
        names, values, sizes, info = narrow[0::6], wide[1::3], wide[2::3], data[4::24]
    else:  # Elf32_Sym: name, value, size (u32 each), info u8, other u8, shndx u16
        names, values, sizes, info = narrow[0::4], narrow[1::4], narrow[2::4], data[12::16]
    is_func = info.translate(_IS_FUNC)
    func_values = list(compress(values, is_func))
    # A nonzero int is true, so the values select themselves.
    kept_values = list(compress(func_values, func_values))
    kept_sizes = compress(compress(sizes, is_func), func_values)
    kept_names = names_at(strtab, compress(compress(names, is_func), func_values))
    return list(map(NEW, repeat(Symbol), zip(kept_names, kept_values, kept_sizes, repeat(source))))


def names_of(symbols: Sequence[Symbol]) -> list[str]:
    """Every name, in order: a cached Columns has them as a list already (elf/columns.py)."""
    names = getattr(symbols, "names", None)
    return names if isinstance(names, list) else list(map(_NAME, symbols))


def names_at(strtab: bytes, offsets: Iterable[int]) -> list[str]:
    """NUL-terminated names at ``offsets``, decoded as UTF-8 (surrogateescape).

    Latin-1 maps byte n to character n, so byte offsets index the decoded str
    and each name is one find and one slice; only non-ASCII names (a few Go
    names in dockerd) are re-decoded as UTF-8.
    """
    text = strtab.decode("latin-1")
    if not text.endswith("\0"):
        text += "\0"  # an unterminated last name runs to the end of the table
    end = text.find
    names = [text[off : end("\0", off)] for off in offsets]
    if strtab.isascii():
        return names
    return [n if n.isascii() else n.encode("latin-1").decode("utf-8", "surrogateescape") for n in names]


def value_of(
    buf: bytes | mmap.mmap, name: bytes, table: tuple[int, int], strings: tuple[int, int], is64: bool, endian: str
) -> int | None:
    """Value of the first defined entry called ``name`` in the symbol table at file
    range ``table`` (offset, size), whose string table is at ``strings``.

    One symbol, so nothing is decoded: a find of the name in the string table, then
    a find of its offset in the st_name column (an aligned hit), both memchr-fast over
    the mapped file, far cheaper than decoding every entry. The name may end a longer
    string (linkers share tails), hence ``name + NUL`` and a try of every hit.
    """
    entsize = 24 if is64 else 16
    start, size = table
    end = start + max(0, min(size, len(buf) - start)) // entsize * entsize  # whole entries inside the file
    value_at, shndx_at = (8, 6) if is64 else (4, 14)
    value = struct.Struct(endian + ("Q" if is64 else "I")).unpack_from
    shndx = struct.Struct(endian + "H").unpack_from
    str_start, str_end = strings[0], strings[0] + strings[1]
    needle = name + b"\0"
    hit = buf.find(needle, str_start, str_end)
    while hit >= 0:
        st_name = struct.pack(endian + "I", hit - str_start)
        pos = buf.find(st_name, start, end)
        while pos >= 0:
            if (pos - start) % entsize == 0 and shndx(buf, pos + shndx_at)[0]:  # SHN_UNDEF is 0
                return int(value(buf, pos + value_at)[0])
            pos = buf.find(st_name, pos + 1, end)
        hit = buf.find(needle, hit + 1, str_end)
    return None


def sorted_unique(symbols: list[Symbol]) -> list[Symbol]:
    """Sorted by (address, name); of equal (name, address) the first one stays.

    Sorting on the address alone is several times cheaper than on (address, name)
    tuples, which would each be built; only runs of equal addresses (aliases,
    and .dynsym entries repeating .symtab ones) are then fixed up one by one.
    """
    symbols = sorted(symbols, key=_ADDRESS)  # stable: table order survives within a run
    addresses = list(map(_ADDRESS, symbols))
    repeats = list(compress(range(1, len(addresses)), map(eq, addresses[1:], addresses)))
    if not repeats:
        return symbols
    out: list[Symbol] = []
    done = 0
    for start, stop in _runs(repeats):
        out.extend(symbols[done:start])
        out.extend(_unique_by_name(symbols[start:stop]))
        done = stop
    out.extend(symbols[done:])
    return out


def _runs(repeats: list[int]) -> list[tuple[int, int]]:
    """[start, stop) of each run of equal addresses, from the indices equal to their predecessor."""
    runs: list[tuple[int, int]] = []
    for i in repeats:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i - 1, i + 1))
    return runs


def _unique_by_name(run: list[Symbol]) -> list[Symbol]:
    first: dict[str, Symbol] = {}
    for sym in run:
        first.setdefault(sym.name, sym)
    return sorted(first.values(), key=_NAME)
