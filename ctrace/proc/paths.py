"""Resolve a path inside a container root without ever leaving that root.

``/proc/PID/root/usr/bin/agent`` must not be handed to bpftrace when
``/usr/bin/agent`` is a symlink: bpftrace 0.17 resolves the link on the host
and the probe never fires. Symlinks are therefore resolved here, component by
component, with absolute targets and ``..`` clamped to the container root (the
walk RESOLVE_IN_ROOT does in openat2).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from ctrace.errors import NotFound, NotTraceable

MAX_LINKS = 40  # the kernel's own limit (MAXSYMLINKS)
SYS_OPENAT2 = 437  # the same number on x86-64 and arm64 (Linux 5.6+)
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_IN_ROOT = 0x02, 0x04, 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


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
    resolved = "/" + "/".join(done)
    verify_in_root(root, path, resolved)
    return resolved


def openat2(dirfd: int, path: str, resolve: int) -> int | None:
    """An O_PATH fd resolved by the kernel under ``resolve`` rules; None where openat2 is missing."""
    libc = ctypes.CDLL(None, use_errno=True)
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, resolve)
    fd = libc.syscall(SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how))
    if fd >= 0:
        return int(fd)
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EPERM):  # old kernel, or a seccomp filter that refuses it
        return None
    raise OSError(err, os.strerror(err), path)


def verify_in_root(root: str, original: str, resolved: str) -> None:
    """Check the walk against the kernel's own RESOLVE_IN_ROOT, where the kernel has it.

    The walk and openat2 must reach the same inode, and the resolved path must
    hold no symlink: a mismatch means the tree changed under us or the walk
    went wrong, and nothing half-resolved may reach bpftrace.
    """
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        ids = []
        for path, rules in ((original, RESOLVE_IN_ROOT), (resolved, RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)):
            fd = openat2(rootfd, path.lstrip("/") or ".", rules | RESOLVE_NO_MAGICLINKS)
            if fd is None:
                return
            st = os.fstat(fd)
            os.close(fd)
            ids.append((st.st_dev, st.st_ino))
    except OSError as err:
        raise NotTraceable(f"{original} inside {root} changed while it was resolved ({err.strerror})") from err
    finally:
        os.close(rootfd)
    if ids[0] != ids[1]:
        raise NotTraceable(f"{original} inside {root} changed while it was resolved")


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same inode (stat follows the final link)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)
