"""elf.inspect results kept on disk, so a second look at the same build is cheap.

One file per key under $XDG_CACHE_HOME/ctrace (default ~/.cache/ctrace). The
key is the build-id and file size (``strip`` keeps the build-id, so the id
alone would serve the unstripped symbols for the stripped file), or without a
build-id the file's device, inode, size and mtime. It also holds this format's
version, ctrace's version, the ElfInfo and Symbol field names and every option
passed to elf.inspect (such as a root for debug-file lookups), so a change to
any of them misses instead of serving stale symbols. The path is left out on
purpose: the same file is reached through /proc/PID/root/... paths whose PID
changes every run.

The payload is marshal, which loads dockerd's 70k symbols in ~10 ms (pickle
of the same NamedTuples is several times slower); a CRC32 guards it, and any
file that fails to read, check or load is ignored and rewritten. Writes go to
a temporary file renamed into place, so readers never see half a file.
marshal is not meant for data from others: the directory is the user's own
(created 0700), and the CRC is against damage, not against an attacker.
"""

from __future__ import annotations

import marshal
import os
import zlib
from collections.abc import Callable
from itertools import repeat
from typing import Any

from ctrace import __version__, elf
from ctrace.elf import ElfInfo, symtab
from ctrace.elf.reader import open_elf
from ctrace.errors import CtraceError
from ctrace.model import Symbol

FORMAT = 2
MAGIC = b"ctr\x01"
KEEP = 64  # files kept; the oldest beyond this are removed when one is written
_SCHEMA = (ElfInfo._fields, Symbol._fields)
_NOT_STORED = ("path", "symbols")

Inspect = Callable[..., ElfInfo]


def _default(path: str, **options: object) -> ElfInfo:
    return elf.inspect(path)  # file paths: debug files are looked up on the host


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ctrace")


def inspect(path: str, directory: str | None, compute: Inspect | None = None, **options: object) -> ElfInfo:
    """``compute(path, **options)`` (default elf.inspect), through the cache in ``directory`` unless it is None."""
    compute = compute or _default
    if directory is None:
        return compute(path, **options)
    try:
        key = cache_key(path, options)
    except (OSError, CtraceError):
        return compute(path, **options)  # not a readable ELF file: let inspect say why
    file = os.path.join(directory, f"{zlib.crc32(key.encode()):08x}{zlib.adler32(key.encode()):08x}")
    found = load(file, key, path)
    if found is not None:
        return found
    info = compute(path, **options)
    store(file, key, info)
    return info


def cache_key(path: str, options: dict[str, object]) -> str:
    st = os.stat(path)
    build_id = open_elf(path).build_id
    if build_id:
        identity: tuple[object, ...] = ("build-id", build_id, st.st_size)
    else:
        identity = ("file", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return repr((FORMAT, __version__, _SCHEMA, identity, sorted(options.items())))


def load(file: str, key: str, path: str) -> ElfInfo | None:
    """The cached ElfInfo (with ``path`` as its path), or None for a miss or a bad file."""
    try:
        with open(file, "rb") as f:
            blob = f.read()
    except OSError:
        return None
    body = memoryview(blob)[8:]
    if blob[:4] != MAGIC or blob[4:8] != zlib.crc32(body).to_bytes(4, "little"):
        return None
    try:
        with symtab.gc_paused():
            stored_key, fields, columns = marshal.loads(body)
            if stored_key != key:
                return None  # two keys with one file name: rare, and a miss is always safe
            symbols = tuple(map(symtab.NEW, repeat(Symbol), zip(*columns)))
            return ElfInfo(path=path, symbols=symbols, **dict(fields))
    except (EOFError, ValueError, TypeError):
        return None


def store(file: str, key: str, info: ElfInfo) -> None:
    """Write ``info`` for ``key``; best effort (a read-only home just means no cache)."""
    fields: Any = tuple((name, value) for name, value in zip(info._fields, info) if name not in _NOT_STORED)
    columns = [list(col) for col in zip(*info.symbols)]  # names, addresses, ...: compact and fast to load
    tmp = f"{file}.{os.getpid()}.tmp"
    try:
        body = marshal.dumps((key, fields, columns))
        os.makedirs(os.path.dirname(file), mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(MAGIC + zlib.crc32(body).to_bytes(4, "little") + body)
        os.replace(tmp, file)
        _prune(os.path.dirname(file))
    except (OSError, ValueError):  # ValueError: a field marshal cannot write
        _remove(tmp)


def _prune(directory: str) -> None:
    entries = [e for e in os.scandir(directory) if e.is_file() and not e.name.endswith(".tmp")]
    if len(entries) > KEEP:
        entries.sort(key=lambda e: e.stat().st_mtime_ns)
        for entry in entries[: len(entries) - KEEP]:
            _remove(entry.path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
