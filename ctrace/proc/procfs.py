"""Pure parsers of /proc text, and thin readers that translate OS errors.

Every reader takes ``proc_root`` (default ``/proc``) so ctrace can run in a pod
that mounts the host's /proc elsewhere (psutil's PROCFS_PATH, STYLE.md habit 4).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ctrace.errors import EnvironmentProblem, NotFound, NotTraceable
from ctrace.record import Record

PROC = "/proc"
DELETED = " (deleted)"


class Status(Record):
    name: str
    tgid: int
    ppid: int
    state: str
    nspid: tuple[int, ...]
    nstgid: tuple[int, ...]
    nspgid: tuple[int, ...]
    nssid: tuple[int, ...]
    kthread: bool = False


class Mapping(Record):
    start: int
    end: int
    perms: str
    offset: int
    inode: int
    path: str


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(v) for v in value.split())


def parse_status(text: str) -> Status:
    """Parse /proc/PID/status; NS* lines list the PID from the host inwards."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    tgid = int(fields.get("Tgid", "0"))
    # Kernels before 4.1 have no NS* lines: the process is in one namespace.
    nspid = _ints(fields["NSpid"]) if "NSpid" in fields else (int(fields.get("Pid", tgid)),)
    return Status(
        name=fields.get("Name", ""),
        tgid=tgid,
        ppid=int(fields.get("PPid", "0")),
        state=fields.get("State", "?")[:1],
        nspid=nspid,
        nstgid=_ints(fields["NStgid"]) if "NStgid" in fields else (tgid,),
        nspgid=_ints(fields.get("NSpgid", "")),
        nssid=_ints(fields.get("NSsid", "")),
        # "Kthread:" is in status since Linux 6.0; before, kthreadd (PID 2) and its children.
        kthread=fields.get("Kthread", "0") == "1" or tgid == 2 or fields.get("PPid") == "2",
    )


def parse_maps(text: str) -> list[Mapping]:
    """Parse /proc/PID/maps; the path keeps embedded spaces and '(deleted)'."""
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        start, _, end = parts[0].partition("-")
        out.append(
            Mapping(
                start=int(start, 16),
                end=int(end, 16),
                perms=parts[1],
                offset=int(parts[2], 16),
                inode=int(parts[4]),
                path=parts[5] if len(parts) > 5 else "",
            )
        )
    return out


def parse_cgroup(text: str) -> list[str]:
    """The cgroup paths of /proc/PID/cgroup, v1 and v2 lines alike."""
    return [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]


def parse_ns_link(link: str) -> int:
    """'pid:[4026531836]' -> 4026531836."""
    return int(link[link.index("[") + 1 : link.index("]")])


@contextmanager
def translated(pid: int, what: str) -> Iterator[None]:
    """Turn an OSError from /proc/PID/... into a CtraceError (psutil's wrap_exceptions)."""
    try:
        yield
    except (FileNotFoundError, ProcessLookupError) as err:
        raise NotFound(f"process {pid} does not exist (or exited)", "list processes with 'ctrace ps'") from err
    except PermissionError as err:
        raise EnvironmentProblem(f"permission denied reading {what} of process {pid}") from err
    except OSError as err:
        if err.errno == errno.ESRCH:
            raise NotFound(f"process {pid} exited while it was read") from err
        raise


def read_text(pid: int, name: str, proc_root: str = PROC) -> str:
    with translated(pid, name), open(f"{proc_root}/{pid}/{name}", "rb") as f:
        return f.read().decode("utf-8", "surrogateescape")


def read_status(pid: int, proc_root: str = PROC) -> Status:
    return parse_status(read_text(pid, "status", proc_root))


def read_exe(pid: int, proc_root: str = PROC) -> tuple[str, bool]:
    """The process's binary as it sees it, and whether the file was deleted.

    The kernel prints the path relative to the process's own mount namespace
    root when the reader cannot reach it, so for a container this is the
    in-container path.
    """
    try:
        with translated(pid, "exe"):
            link = os.readlink(f"{proc_root}/{pid}/exe")
    except NotFound:
        raise _why_no_exe(pid, proc_root) from None
    if link.endswith(DELETED):
        return link[: -len(DELETED)], True
    return link, False


def _why_no_exe(pid: int, proc_root: str) -> NotTraceable | NotFound:
    """A process without /proc/PID/exe: a kernel thread, a zombie, or gone."""
    try:
        status = read_status(pid, proc_root)
    except NotFound as err:
        return err
    if status.state == "Z":
        return NotTraceable(
            f"process {pid} is a zombie: it has exited and waits for its parent ({status.ppid}) to reap it",
            "probe a live process; a zombie runs no code",
        )
    if status.kthread:
        return NotTraceable(
            f"process {pid} is a kernel thread: it has no user-space binary to probe",
            "pick a user-space process ('ctrace ps' lists them)",
        )
    return NotFound(f"process {pid} has no executable (it is exiting)", "list processes with 'ctrace ps'")


def read_argv0(pid: int, proc_root: str = PROC) -> str:
    try:
        raw = read_text(pid, "cmdline", proc_root)
    except NotFound:
        return ""
    return raw.split("\0", 1)[0]


def namespaces(pid: int, proc_root: str = PROC) -> dict[str, int]:
    """Namespace ids from /proc/PID/ns/* (the numbers `lsns` shows); unreadable ones are left out."""
    base = f"{proc_root}/{pid}/ns"
    with translated(pid, "ns"):
        names = sorted(os.listdir(base))
    out, denied = {}, None
    for name in names:
        try:
            with translated(pid, f"ns/{name}"):
                out[name] = parse_ns_link(os.readlink(f"{base}/{name}"))
        except EnvironmentProblem as err:
            denied = err
        except (NotFound, ValueError):
            continue
    if denied is not None and not out:
        raise denied
    return out


def pids(proc_root: str = PROC) -> list[int]:
    """Thread-group ids; /proc lists no thread ids, so threads never show."""
    try:
        names = os.listdir(proc_root)
    except OSError as err:
        raise EnvironmentProblem(
            f"cannot list {proc_root}: {err.strerror}", "point --proc-root at the host's /proc"
        ) from err
    return sorted(int(n) for n in names if n.isdigit())


def read_bytes(path: str, size: int = 1 << 16) -> bytes | None:
    """A file's first ``size`` bytes with bare os calls; None when it is gone or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)


def mount_ns(pid: int | str, proc_root: str = PROC) -> int | None:
    """The inode of /proc/PID/ns/mnt (what bpftrace's curtask->nsproxy->mnt_ns->ns.inum reads,
    and ``lsns`` shows); ``pid`` may be "self". None when unreadable."""
    try:
        return os.stat(f"{proc_root}/{pid}/ns/mnt").st_ino
    except OSError:
        return None


# The init PID namespace's inode, fixed by the kernel (PROC_PID_INIT_INO).
INIT_PID_NS = 0xEFFFFFFC


def pid_ns(pid: int | str, proc_root: str = PROC) -> int | None:
    """The inode of /proc/PID/ns/pid (``pid`` may be "self"); None when unreadable."""
    try:
        return os.stat(f"{proc_root}/{pid}/ns/pid").st_ino
    except OSError:
        return None


def shares_mount_ns(pid: int, proc_root: str = PROC) -> bool | None:
    """Whether the process sees ctrace's own mount namespace; None when either is unreadable."""
    mine, theirs = mount_ns("self", proc_root), mount_ns(pid, proc_root)
    return None if mine is None or theirs is None else mine == theirs


def start_time(pid: int, proc_root: str = PROC) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): a PID reused by another process
    differs. None for a process that is gone or a zombie (exited, not yet reaped)."""
    raw = read_bytes(f"{proc_root}/{pid}/stat", 4096)
    if raw is None:
        return None
    fields = raw.rpartition(b")")[2].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def read_comm(pid: int, proc_root: str = PROC) -> str | None:
    """/proc/PID/comm without its newline; None when the process is gone or unreadable."""
    raw = read_bytes(f"{proc_root}/{pid}/comm", 4096)
    return None if raw is None else raw.decode("utf-8", "surrogateescape").strip()


def read_maps(pid: int, proc_root: str = PROC) -> str:
    """/proc/PID/maps as text; "" when the process is gone or unreadable."""
    try:
        with open(f"{proc_root}/{pid}/maps", "rb") as f:
            return f.read().decode("utf-8", "surrogateescape")
    except OSError:
        return ""


def read_link(pid: int, name: str, proc_root: str = PROC) -> str | None:
    """Where /proc/PID/NAME points (exe, cwd); None for a kernel thread or a process gone."""
    try:
        return os.readlink(f"{proc_root}/{pid}/{name}")
    except OSError:
        return None


def open_root(pid: int, proc_root: str = PROC) -> str | None:
    """An open directory fd of the process's root, as a path (/proc/self/fd/N), so files
    inside it stay reachable after the process exits; None when it cannot be opened."""
    try:
        fd = os.open(f"{proc_root}/{pid}/root", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    return f"/proc/self/fd/{fd}"


def aslr() -> bool:
    """Whether the kernel places each exec anew (/proc/sys/kernel/randomize_va_space is not 0)."""
    raw = read_bytes("/proc/sys/kernel/randomize_va_space", 64)
    return raw is not None and raw.strip() != b"0"
