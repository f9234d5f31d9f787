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

The payload is marshal of the symbols packed a column each (elf/columns.py:
a load is a few copies, and no Symbol is made until one is asked for; pickle of
the same NamedTuples is several times slower); a CRC32 guards it, and any file
that fails to read, check or load is ignored and rewritten. Writes go to a
temporary file renamed into place, so readers never see half a file.
marshal is not meant for data from others: the directory is the user's own
(created 0700), and the CRC is against damage, not against an attacker.

Beside an entry, elf/listing.py keeps the rendered rows of ``ctrace symbols
FILE`` (``<entry>.json``, ``<entry>.text``) in the same directory, under the
same key and pruning. At most KEEP files and MAX_BYTES are kept, newest first.
"""

from __future__ import annotations

import marshal
import mmap
import os
import zlib
from collections.abc import Callable

from ctrace import __version__, elf
from ctrace.elf import ElfInfo, columns, debuginfo, debuginfod, symtab
from ctrace.elf.reader import open_elf
from ctrace.errors import CtraceError
from ctrace.model import Symbol
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

FORMAT = 5  # 4: symbols packed a column each (elf/columns.py); 5: names joined between NULs
MAGIC = b"ctr\x01"
KEEP = 64  # files kept; the oldest beyond this are removed when one is written
MAX_BYTES = 256 << 20  # and at most this much (dockerd's JSON rows are 10 MB)
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
    file = os.path.join(directory, _name(key))
    found = load(file, key, path)
    if found is not None:
        return found
    info = compute(path, **options)
    store(file, key, info)
    return info


def _name(key: str) -> str:
    return f"{zlib.crc32(key.encode()):08x}{zlib.adler32(key.encode()):08x}"


def cache_key(path: str, options: dict[str, object]) -> str:
    st = os.stat(path)
    build_id = open_elf(path).build_id
    if build_id:
        identity: tuple[object, ...] = ("build-id", build_id, st.st_size)
    else:
        identity = ("file", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    # A debug package installed (or removed) since adds (or takes) names: its
    # build-id file's state is part of the key, one stat per root.
    roots = tuple(dict.fromkeys((str(options.get("root") or "/"), "/")))
    debug = [_state(p) for p in debuginfo.build_id_paths(build_id, roots)]
    fetched = debuginfod.cached_path(build_id)  # a debug file fetched since (elf/debuginfod.py)
    debug += [_state(fetched)] if fetched else []
    return repr((FORMAT, __version__, _SCHEMA, identity, debug, sorted(options.items())))


def _state(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def load(file: str, key: str, path: str) -> ElfInfo | None:
    """The cached ElfInfo (with ``path`` as its path), or None for a miss or a bad file."""
    with symtab.gc_paused():
        found = _read(file, key)
        if found is None:
            return None
        try:
            fields, packed = found
            return ElfInfo(path=path, symbols=columns.unpack(packed), **dict(fields))
        except (ValueError, TypeError):
            return None


def store(file: str, key: str, info: ElfInfo) -> None:
    """Write ``info`` for ``key``; best effort (a read-only home just means no cache)."""
    fields = tuple((name, value) for name, value in zip(info._fields, info) if name not in _NOT_STORED)
    _write(file, key, (fields, columns.pack(info.symbols)))


def _read(file: str, key: str) -> Any:
    """The value stored under ``key`` in ``file``, or None for a miss or a bad file."""
    # Mapped, not read: marshal and the CRC work on the page cache's own pages, and a
    # 3 MB entry is not copied once more into a bytes object first.
    try:
        with open(file, "rb") as f:
            blob = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # ValueError: an empty file
        return None
    with blob:
        body = memoryview(blob)[8:]
        try:
            if blob[:4] != MAGIC or blob[4:8] != zlib.crc32(body).to_bytes(4, "little"):
                return None
            stored_key, value = marshal.loads(body)
        except (EOFError, ValueError, TypeError):
            return None
        finally:
            body.release()  # before the mapping closes
    return value if stored_key == key else None  # two keys with one file name: rare, and a miss is safe


def _write(file: str, key: str, value: Any) -> None:
    """Best effort: a read-only home just means no cache."""
    try:
        body = marshal.dumps((key, value))
    except ValueError:  # a value marshal cannot write
        return
    replace(file, [MAGIC + zlib.crc32(body).to_bytes(4, "little"), body])


def replace(file: str, chunks: list[bytes]) -> None:
    """``file`` made of ``chunks``, written to a temporary file renamed into place (readers
    never see half a file), then the directory pruned; best effort, as every write here."""
    tmp = f"{file}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(file), mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, file)
        _prune(os.path.dirname(file))
    except OSError:
        _remove(tmp)


def _prune(directory: str) -> None:
    """Keep the newest KEEP files, and of those no more than MAX_BYTES."""
    entries = []
    for e in os.scandir(directory):
        try:
            if e.is_file() and not e.name.endswith(".tmp"):
                st = e.stat()
                entries.append((st.st_mtime_ns, st.st_size, e.path))
        except OSError:
            continue  # removed by another ctrace meanwhile
    entries.sort(reverse=True)
    total = 0
    for i, (_, size, path) in enumerate(entries):
        total += size
        if i >= KEEP or (i > 0 and total > MAX_BYTES):
            _remove(path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
