"""Files a process has mapped: its libraries (``--lib``), and who else runs a file.

A uprobe is placed on a file (an inode), so every process that maps the
file fires it. On overlayfs each container's mount has its own st_dev, but
files of a shared image layer keep the lower layer's inode number (measured on
docker 20.10 overlay2, kernel 6.1: two replicas show dev 39 and 50, inode
1515909 for both), so "the same file" is matched on inode, size and mtime
rather than on (dev, inode).
"""

from __future__ import annotations

import os
import re

from ctrace.errors import NotFound, UsageError
from ctrace.proc import procfs
from ctrace.record import Record


class FileKey(Record):
    ino: int
    size: int
    mtime_ns: int


def key(path: str) -> FileKey | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileKey(st.st_ino, st.st_size, st.st_mtime_ns)


def mapped_files(pid: int, proc_root: str = procfs.PROC) -> dict[str, str]:
    """Every file the process maps: its path as the process sees it -> its /proc/PID/map_files entry."""
    first: dict[str, str] = {}
    for m in procfs.parse_maps(procfs.read_text(pid, "maps", proc_root)):
        if m.path.startswith("/"):
            first.setdefault(m.path, f"{proc_root}/{pid}/map_files/{m.start:x}-{m.end:x}")
    return first


def libraries(pid: int, proc_root: str = procfs.PROC) -> list[str]:
    """The shared libraries the process maps (paths as it sees them)."""
    return sorted(p for p in mapped_files(pid, proc_root) if ".so" in os.path.basename(p))


def stem(path: str) -> str:
    """A library's name without version or suffix: libc.so.6 and libc-2.31.so -> libc."""
    base = os.path.basename(path.removesuffix(procfs.DELETED)).split(".so", 1)[0]
    return re.sub(r"-[0-9][0-9.]*\Z", "", base)


def library(pid: int, name: str, proc_root: str = procfs.PROC) -> tuple[str, str]:
    """The one mapped file ``name`` names: its path as the process sees it, and its
    /proc/PID/map_files entry (the file actually mapped).

    ``name`` is the file name or its stem (``libc`` is libc.so.6, not libcrypto.so.3);
    only when no file has that stem is it a prefix of the file name."""
    first = mapped_files(pid, proc_root)
    paths = sorted(first)
    base = {p: os.path.basename(p.removesuffix(procfs.DELETED)) for p in paths}
    hits = [p for p in paths if base[p] == name] or [p for p in paths if stem(p) == name]
    hits = hits or [p for p in paths if base[p].startswith(name)]
    if not hits:
        near = ", ".join(os.path.basename(p) for p in paths if ".so" in p) or "none"
        raise NotFound(f"process {pid} maps no library named {name}*", f"it maps: {near}")
    if len(hits) > 1:
        raise UsageError(
            f"--lib {name} matches {len(hits)} files mapped by process {pid}: {', '.join(hits)}",
            "give more of the name, e.g. --lib " + _shortest_unique(hits[0], hits),
        )
    return hits[0], first[hits[0]]


def _shortest_unique(path: str, among: list[str]) -> str:
    """The stem of ``path`` if no other of ``among`` has it, else its file name."""
    return stem(path) if [stem(p) for p in among].count(stem(path)) == 1 else os.path.basename(path)


def sharers(host_path: str, pid: int, proc_root: str = procfs.PROC, libraries: bool = False) -> list[int]:
    """Other processes running (or, with ``libraries``, mapping) the same file."""
    want = key(host_path)
    if want is None:
        return []
    out = []
    for other in procfs.pids(proc_root):
        if other == pid:
            continue
        if _runs(other, want, proc_root) or (libraries and _maps(other, want, proc_root)):
            out.append(other)
    return out


def _runs(pid: int, want: FileKey, proc_root: str) -> bool:
    return key(f"{proc_root}/{pid}/exe") == want


def _maps(pid: int, want: FileKey, proc_root: str) -> bool:
    try:
        with open(f"{proc_root}/{pid}/maps", "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return False
    for m in procfs.parse_maps(text):
        if m.inode == want.ino and key(f"{proc_root}/{pid}/map_files/{m.start:x}-{m.end:x}") == want:
            return True
    return False
