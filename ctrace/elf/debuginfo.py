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
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from ctrace.elf import ElfInfo as ElfInfoLike

DEBUG_ROOT = "/usr/lib/debug"


class DebugSymbols(Record):
    source: str  # "build-id", "debuglink", "debuginfod" or "minidebuginfo"
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
    """(source, path) of the one debug file read for ``elf``: by build-id, else by debuglink,
    else one a debuginfod server gave for its build-id earlier (elf/debuginfod.py)."""
    return by_build_id(elf, roots) or by_debuglink(elf, binary_dir, roots) or by_debuginfod(elf)


def by_debuginfod(elf: ElfFile) -> tuple[str, str] | None:
    from ctrace.elf import debuginfod

    path = debuginfod.cached_path(elf.build_id)
    if path is None or not os.path.isfile(path):
        return None
    try:
        same = open_elf(path).build_id == elf.build_id  # a server's answer is checked, not trusted
    except CtraceError:
        same = False
    return ("debuginfod", path) if same else None


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


def looked_for(elf: ElfFile, binary_dir: str, roots: tuple[str, ...]) -> list[str]:
    """Every file locate() tried, in its order (for the error when none was there)."""
    out = build_id_paths(elf.build_id, roots)
    link = debuglink(elf)
    if link is not None:
        dirs = (binary_dir, f"{binary_dir}/.debug", f"{DEBUG_ROOT}{binary_dir}")
        out += [_join(root, f"{d}/{link[0]}") for root in roots for d in dirs]
    return out


DPKG_INFO = "/var/lib/dpkg/info"


def debian_package(path: str, root: str = "/") -> str | None:
    """The Debian package that installed ``path`` (as the system under ``root`` sees it),
    from dpkg's own file lists: one read of each .list, no dpkg -S (a second per call)."""
    info = _join(root, DPKG_INFO)
    want = {path.encode(), *_usrmerge(path.encode())}
    try:
        names = [n for n in os.listdir(info) if n.endswith(".list")]
    except OSError:
        return None
    for name in names:
        try:
            with open(os.path.join(info, name), "rb") as f:
                text = f.read()
        except OSError:
            continue
        if any(b"\n" + w + b"\n" in b"\n" + text for w in want):
            return name.removesuffix(".list").split(":")[0]
    return None


def _usrmerge(path: bytes) -> list[bytes]:
    """/usr/bin/x is /bin/x on a merged-/usr system: dpkg lists whichever the package shipped."""
    if path.startswith(b"/usr/"):
        return [path[4:]]
    return [b"/usr" + path] if path.startswith((b"/bin/", b"/sbin/", b"/lib")) else []


_HAVE_FILE = ("build-id", "debuglink", "debuginfod")
_SAID: dict[str, list[str]] = {}  # build-id -> what each debuginfod server answered, for explain()


def fetch_missing(info: ElfInfoLike, host_path: str) -> str | None:
    """With DEBUGINFOD_URLS set, the debug file for a binary that has none yet, fetched by build-id."""
    from ctrace.elf import debuginfod

    if not debuginfod.urls() or not info.build_id or any(src in _HAVE_FILE for src, _ in info.debug_files):
        return None
    path, said = debuginfod.fetch(info.build_id)
    _SAID[info.build_id] = said
    return path


def explain(info: ElfInfoLike, host_path: str, path: str, root: str) -> tuple[str, str] | None:
    """Why a stripped binary names so few functions, and what to install: (message, hint);
    None when it has a debug file already, or nothing to look one up by."""
    from ctrace.elf import debuginfod

    if any(src in _HAVE_FILE for src, _ in info.debug_files):
        return None
    try:
        elf = open_elf(host_path)
    except CtraceError:
        return None
    link = debuglink(elf)
    if not elf.build_id and link is None:
        return None
    roots = tuple(dict.fromkeys((root, "/")))
    tried = [p.removeprefix(root) if root != "/" else p for p in looked_for(elf, os.path.dirname(path), roots)]
    facts = f"build-id {elf.build_id or 'none'}, debug link {link[0] if link else 'none'}"
    message = f"no debug file for it: {facts}; looked for {', '.join(dict.fromkeys(tried))}"
    said = _SAID.get(elf.build_id or "", [])
    if said:
        message += f"; debuginfod: {', '.join(said)}"
    pkg = debian_package(path, root) or (debian_package(path) if root != "/" else None)
    if pkg:
        hint = (
            f"install {pkg}-dbgsym (the debug symbols of package {pkg}, which installed {path}; "
            "apt needs the debian-debug archive in its sources)"
        )
    else:
        hint = f"{path} is not from a Debian package: put its debug file at {tried[0] if tried else 'the path above'}"
    if not debuginfod.urls() and elf.build_id:
        hint += ", or set DEBUGINFOD_URLS to a debuginfod server's URL and ctrace fetches it by build-id"
    return message, hint
