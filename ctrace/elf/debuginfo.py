"""Function names kept outside the binary: build-id and .gnu_debuglink debug files, MiniDebugInfo.

Lookup order follows GDB's (and bcc's, which bpftrace 0.17 uses to list and attach):
1. ``/usr/lib/debug/.build-id/xx/yyyy.debug`` by the binary's GNU build-id, inside the
   container's root first (a debug package installed in the image), then on the host;
2. the ``.gnu_debuglink`` file name, in the binary's directory, its ``.debug/`` and
   ``/usr/lib/debug/<dir>/``, accepted only when its CRC32 matches the link's;
3. MiniDebugInfo: an xz-compressed ELF in ``.gnu_debugdata`` whose .symtab holds the
   functions Fedora's find-debuginfo strips from the binary but keeps for backtraces.
A debug file's symbols carry the binary's own virtual addresses.
"""

from __future__ import annotations

import os
import struct
import zlib

from ctrace.elf.reader import ElfFile, open_elf
from ctrace.errors import CtraceError
from ctrace.model import Symbol
from ctrace.record import Record

DEBUG_ROOT = "/usr/lib/debug"


class DebugSymbols(Record):
    source: str  # "build-id", "debuglink" or "minidebuginfo"
    path: str  # the debug file, or "<binary>:.gnu_debugdata"
    symbols: list[Symbol]


def collect(elf: ElfFile, binary_dir: str, roots: tuple[str, ...]) -> list[DebugSymbols]:
    """Every debug source found for ``elf``: at most one debug file, plus MiniDebugInfo."""
    out = []
    found = locate(elf, binary_dir, roots)
    if found is not None:
        source, path = found
        out.append(DebugSymbols(source, path, _relabel(_symbols_of(path), source)))
    mini = minidebuginfo(elf)
    if mini:
        out.append(DebugSymbols("minidebuginfo", f"{elf.name}:.gnu_debugdata", mini))
    return out


def locate(elf: ElfFile, binary_dir: str, roots: tuple[str, ...]) -> tuple[str, str] | None:
    """(source, path) of the one debug file read for ``elf``: by build-id, else by debuglink."""
    return by_build_id(elf, roots) or by_debuglink(elf, binary_dir, roots)


def by_build_id(elf: ElfFile, roots: tuple[str, ...]) -> tuple[str, str] | None:
    for path in build_id_paths(elf.build_id, roots):
        if os.path.isfile(path):
            return "build-id", path
    return None


def build_id_paths(build_id: str | None, roots: tuple[str, ...]) -> list[str]:
    """Where a debug file for ``build_id`` would be, under each root, in lookup order."""
    if not build_id or len(build_id) < 4:
        return []
    return [_join(root, f"{DEBUG_ROOT}/.build-id/{build_id[:2]}/{build_id[2:]}.debug") for root in roots]


def debuglink(elf: ElfFile) -> tuple[str, int] | None:
    """(file name, CRC32) from .gnu_debuglink: a NUL-ended name, padding to 4, a CRC."""
    sec = elf.section(".gnu_debuglink")
    if sec is None:
        return None
    data = elf.section_data(sec)
    end = data.find(b"\0")
    if end <= 0:
        return None
    crc_at = (end + 4) & ~3
    if crc_at + 4 > len(data):
        return None
    name = data[:end].decode("utf-8", "surrogateescape")
    return os.path.basename(name), struct.unpack_from(elf.endian + "I", data, crc_at)[0]


def by_debuglink(elf: ElfFile, binary_dir: str, roots: tuple[str, ...]) -> tuple[str, str] | None:
    link = debuglink(elf)
    if link is None:
        return None
    name, crc = link
    for root in roots:
        for d in (binary_dir, f"{binary_dir}/.debug", f"{DEBUG_ROOT}{binary_dir}"):
            path = _join(root, f"{d}/{name}")
            if os.path.isfile(path) and _crc32(path) == crc:
                return "debuglink", path
    return None


def minidebuginfo(elf: ElfFile) -> list[Symbol]:
    sec = elf.section(".gnu_debugdata")
    if sec is None:
        return []
    import lzma

    try:
        inner = ElfFile(lzma.decompress(elf.section_data(sec)), f"{elf.name}:.gnu_debugdata")
    except (lzma.LZMAError, CtraceError):
        return []  # a damaged section costs its names, not the binary
    return _relabel(inner.symbols(), "minidebuginfo")


def _symbols_of(path: str) -> list[Symbol]:
    try:
        return open_elf(path).symbols()
    except CtraceError:
        return []


def _relabel(symbols: list[Symbol], source: str) -> list[Symbol]:
    return [s._replace(source=source) for s in symbols]


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return crc


def _join(root: str, path: str) -> str:
    return path if root in ("", "/") else root.rstrip("/") + path
