"""Resolve a path inside a container root without ever leaving that root.

``/proc/PID/root/usr/bin/agent`` must not be handed to bpftrace when
``/usr/bin/agent`` is a symlink: bpftrace 0.17 resolves the link on the host
and the probe never fires. Symlinks are therefore resolved here, component by
component, with absolute targets and ``..`` clamped to the container root (the
walk RESOLVE_IN_ROOT does in openat2).
"""

from __future__ import annotations

import os
import stat

from ctrace.errors import NotFound, NotTraceable

MAX_LINKS = 40  # the kernel's own limit (MAXSYMLINKS)


def resolve_in_root(root: str, path: str) -> str:
    """The canonical in-root path of ``path`` (absolute, as seen inside ``root``)."""
    pending = [p for p in path.split("/") if p]
    pending.reverse()
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = "/" + "/".join([*done, part])
        try:
            st = os.lstat(root + candidate)
        except FileNotFoundError:
            raise NotFound(f"{candidate} does not exist inside {root}") from None
        if not stat.S_ISLNK(st.st_mode):
            done.append(part)
            continue
        links += 1
        if links > MAX_LINKS:
            raise NotTraceable(f"too many levels of symbolic links resolving {path} inside {root}")
        target = os.readlink(root + candidate)
        if target.startswith("/"):
            done = []
        pending.extend(reversed([p for p in target.split("/") if p]))
    return "/" + "/".join(done)


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same inode (stat follows the final link)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
