"""The rows of ``ctrace symbols FILE``: made in one pass of C where the speedups are built, and cached.

Cached (cached()): rows do not depend on the path, so they are kept rendered
beside the symbol cache's entries (elf/cache.py: same key, same pruning), and
a second listing of the same build sends them from that file to stdout
without reading a symbol or formatting a row.

Made (build()): elf.inspect makes a Symbol tuple per function of every source, sorts and merges
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

import errno
import marshal
import os
import zlib
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring_ascii

from ctrace.elf import ElfInfo, cache, debuginfo, speedups
from ctrace.elf.mangling import kinds as elf_kinds
from ctrace.elf.reader import ElfFile, open_elf
from ctrace.elf.symtab import NATIVE
from ctrace.errors import CtraceError
from ctrace.model import Symbol
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import Any, BinaryIO

# ("table", data, strtab, is64, swap, label), ("symbols", [Symbol, ...]) or a Go table (pclntab.source)
Source = tuple[object, ...]


MAGIC = b"ctL\x01"


class Rows(Record):
    """A listing's rows left in its open cache file: ``length`` bytes from ``offset``.

    ``ctrace symbols FILE`` hands them to the kernel (sendfile), so a hit on
    dockerd's 10 MB of rows allocates none of them; they are checked by length
    (the header and its fields by CRC), not read to be summed."""

    file: BinaryIO
    offset: int
    length: int

    def read(self) -> bytes:
        with self.file:
            self.file.seek(self.offset)
            data = self.file.read(self.length)
        if len(data) != self.length:
            raise OSError(f"{self.file.name}: rows cut short")
        return data

    def copy_to(self, fd: int) -> None:
        """Write the rows to ``fd``: sendfile, or read and write where ``fd`` takes no sendfile."""
        with self.file:
            done = 0
            try:
                while done < self.length:
                    sent = os.sendfile(fd, self.file.fileno(), self.offset + done, self.length - done)
                    if sent == 0:
                        raise OSError(f"{self.file.name}: rows cut short")
                    done += sent
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF) or done:
                    raise
                self.file.seek(self.offset)
                os.write(fd, b"")  # an fd that refuses writes too raises here
                while done < self.length:
                    chunk = self.file.read(min(1 << 20, self.length - done))
                    if not chunk:
                        raise OSError(f"{self.file.name}: rows cut short") from None
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    done += len(chunk)


class Listing(Record):
    """What ``ctrace symbols FILE`` prints besides the path: the ElfInfo summary and the rows."""

    build_id: str | None
    stripped: bool
    language: str
    sources: dict[str, int]
    debug_files: tuple[tuple[str, str], ...]
    functions: int  # how many rows
    rows: bytes | Rows  # UTF-8 (surrogateescape: names are bytes in the file); Rows: a hit, lazy=True


def cached(
    path: str,
    directory: str | None,
    fmt: str,
    rows: Callable[[ElfInfo], str],
    fast: Callable[[str], Listing | None] | None = None,
    lazy: bool = False,
) -> Listing:
    """Rows of every function of ``path`` rendered by ``rows`` (one function per ``fmt``),
    cached in ``directory`` unless it is None. ``fast(path)`` makes the same Listing
    without elf.inspect where it can (elf/listing.py), else returns None. With
    ``lazy``, a hit's rows stay in the cache file (Rows)."""
    key = file = None
    if directory is not None:
        try:
            key = repr((cache.cache_key(path, {}), "listing", fmt))
            file = os.path.join(directory, f"{cache._name(key)}.{fmt}")
        except (OSError, CtraceError):
            pass  # not a readable ELF file: inspect says why
    found = _read_listing(file, key) if file and key else None
    if found is not None:
        try:
            fields, stored = found
            return Listing._make((*fields, stored if lazy else stored.read()))
        except (TypeError, OSError):
            pass  # a file of another shape under a matching key, or cut short: rewrite it
    made = fast(path) if fast is not None else None
    if made is None:
        info = cache.inspect(path, directory)
        text = rows(info).encode("utf-8", "surrogateescape")
        made = Listing(
            info.build_id, info.stripped, info.language, info.sources(), info.debug_files, len(info.symbols), text
        )
    if file and key:
        _write_listing(file, key, made)
    return made


def _read_listing(file: str, key: str) -> tuple[tuple[Any, ...], Rows] | None:
    """The fields and the Rows of a listing file, or None for a miss or a bad file.

    The file: MAGIC, the CRC32 and length of the header (4 and 8 bytes,
    little-endian), the header (marshal of the key, the fields but rows, and the
    rows' length), then the rows."""
    try:
        f = open(file, "rb")
    except OSError:
        return None
    try:
        start = f.read(16)
        size = int.from_bytes(start[8:16], "little")
        head = f.read(size) if start[:4] == MAGIC and size < 1 << 20 else b""
        if not head or len(head) != size or zlib.crc32(head).to_bytes(4, "little") != start[4:8]:
            raise ValueError("not a listing file")
        stored_key, fields, length = marshal.loads(head)
        if stored_key != key or os.fstat(f.fileno()).st_size != 16 + size + length:
            raise ValueError("another key, or rows cut short")
        return tuple(fields), Rows(f, 16 + size, length)
    except (OSError, EOFError, ValueError, TypeError):
        f.close()
        return None


def _write_listing(file: str, key: str, made: Listing) -> None:
    """Best effort, as _write; the rows are written as they are, after the header."""
    rows = made.rows if isinstance(made.rows, bytes) else made.rows.read()
    try:
        head = marshal.dumps((key, tuple(made[:-1]), len(rows)))
    except ValueError:  # a field marshal cannot write
        return
    prefix = MAGIC + zlib.crc32(head).to_bytes(4, "little") + len(head).to_bytes(8, "little")
    cache.replace(file, [prefix, head, rows])


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
        from ctrace.elf import pclntab

        sources.append(pclntab.source(binary, _Symbols(binary)))
    debug_files = _debug_sources(binary, os.path.dirname(os.path.realpath(path)), sources)

    def classify(candidates: list[str], own_candidates: list[str]) -> tuple[str, dict[str, str] | int]:
        # elf.inspect decides the language from the binary's own tables alone, and
        # demangles the names of every source.
        language = "go" if go else elf.named_language(binary, own_candidates)
        fused = _fused(language, candidates)
        return language, fused or elf.demangled(language, candidates)

    made = speedups.module.listing(sources, own, fmt, encode_basestring_ascii, classify)
    if made is None:
        return None
    rows, counts, functions, language = made
    return Listing(binary.build_id, binary.stripped, language, counts, debug_files, functions, rows)


def _fused(language: str, candidates: list[str]) -> int:
    """__cxa_demangle's address when C may demangle the names itself, straight into the rows
    (no str or dict entry per name, a large share of libLLVM's 30k), or 0. Only for C++ without
    Rust's names, whose demangled text Python rewrites (demangle._rust_legacy, c++filt)."""
    if language != "c++":
        return 0
    from ctrace.elf import demangle

    found = elf_kinds(candidates)
    return 0 if found.legacy or found.v0 else demangle.cxa_address()


def tables(elf: ElfFile, label: str | None = None) -> list[Source]:
    """The .symtab and .dynsym of ``elf``, in section order, as ElfFile.symbols reads them."""
    out: list[Source] = []
    for sec, strings, source in elf.symbol_tables():
        strtab = elf.section_view(strings)
        out.append(("table", elf.section_view(sec), strtab, elf.is64, elf.endian != NATIVE, label or source))
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
