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

from ctrace import procfs
from ctrace.errors import NotFound, UsageError
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


def library(pid: int, name: str, proc_root: str = procfs.PROC) -> tuple[str, str]:
    """The one mapped file whose basename starts with ``name``: its path as the
    process sees it, and its /proc/PID/map_files entry (the file actually mapped)."""
    maps = procfs.parse_maps(procfs.read_text(pid, "maps", proc_root))
    first: dict[str, str] = {}
    for m in maps:
        if m.path.startswith("/"):
            first.setdefault(m.path, f"{proc_root}/{pid}/map_files/{m.start:x}-{m.end:x}")
    paths = sorted(first)
    hits = [p for p in paths if os.path.basename(p.removesuffix(procfs.DELETED)).startswith(name)]
    if not hits:
        near = ", ".join(os.path.basename(p) for p in paths if ".so" in p) or "none"
        raise NotFound(f"process {pid} maps no library named {name}*", f"it maps: {near}")
    if len(hits) > 1:
        raise UsageError(
            f"--lib {name} matches {len(hits)} files mapped by process {pid}: {', '.join(hits)}",
            "give more of the name, e.g. --lib " + os.path.basename(hits[0]),
        )
    return hits[0], first[hits[0]]


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
