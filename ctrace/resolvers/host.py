"""Host processes: ``pid:N``, a bare PID, or a process name (comm, exe or argv[0])."""

from __future__ import annotations

import os

from ctrace import procfs
from ctrace.errors import NotFound, NotTraceable, UsageError
from ctrace.model import Process
from ctrace.resolvers.base import Context

NAME = "host"


def parse_pid(target: str) -> int | None:
    """The PID in ``pid:N`` or ``N``; None for anything else."""
    text = target[4:] if target.startswith("pid:") else target
    if not text.isdigit() or not text.isascii():
        if target.startswith("pid:"):
            raise UsageError(f"{target!r} is not a PID", "write pid:1234")
        return None
    pid = int(text)
    if pid <= 0:
        raise UsageError(f"{target!r} is not a PID", "PIDs start at 1")
    return pid


def claims(target: str, ctx: Context) -> bool:
    return parse_pid(target) is not None


def process(pid: int, ctx: Context) -> Process:
    """The process (thread group) a PID or thread id belongs to."""
    status = procfs.read_status(pid, ctx.proc_root)
    if status.tgid and status.tgid != pid:
        pid = status.tgid  # a thread id: report its process
        status = procfs.read_status(pid, ctx.proc_root)
    exe, deleted = procfs.read_exe(pid, ctx.proc_root)
    return Process(pid=pid, nspid=status.nspid, comm=status.name, exe=exe, deleted=deleted)


def resolve(target: str, ctx: Context) -> list[Process]:
    pid = parse_pid(target)
    if pid is not None:
        return [process(pid, ctx)]
    found = []
    for pid in matching_pids(target, ctx):
        try:
            found.append(process(pid, ctx))
        except (NotFound, NotTraceable):
            continue  # exited between the scan and the read
    if not found:
        raise NotFound(f"no process named {target!r}", "list processes with 'ctrace ps'")
    return found


def matching_pids(name: str, ctx: Context) -> list[int]:
    """PIDs whose comm, exe basename or argv[0] basename is ``name``."""
    out = []
    for pid in procfs.pids(ctx.proc_root):
        if pid == ctx.self_pid:
            continue
        try:
            if _names_match(pid, name, ctx.proc_root):
                out.append(pid)
        except (NotFound, OSError):
            continue  # exited while we looked, or a kernel thread
    return out


def _names_match(pid: int, name: str, proc_root: str) -> bool:
    comm = procfs.read_text(pid, "comm", proc_root).rstrip("\n")
    # comm is cut to 15 bytes, so a long name is matched on exe and argv[0] only.
    if comm == name:
        return True
    try:
        exe = os.readlink(f"{proc_root}/{pid}/exe")
    except OSError:
        return False  # kernel thread or gone
    if os.path.basename(exe.removesuffix(procfs.DELETED)) == name:
        return True
    return os.path.basename(procfs.read_argv0(pid, proc_root)) == name
