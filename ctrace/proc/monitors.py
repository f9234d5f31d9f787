"""The runtime monitors above a process: a containerd shim (its working directory is the
task's bundle) or a conmon (its arguments name the container and its bundle).

``procfs.placement`` walks a process's parents through a ``Tree`` until the
host's init; each monitor on the way is one container level, outermost first
(a containerd shim inside a kind node's docker container gives two).
"""

from __future__ import annotations

import os

from ctrace.proc.procfs import PROC, mount_ns, read_bytes
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from ctrace.proc import cgroups

SHIM = "containerd-shim"  # comm of containerd-shim-runc-v2 (and -v1), cut to 15 bytes
CONMON = "conmon"  # podman's and CRI-O's monitor


class Tree:
    """Parents and names of processes, each read once, and what each runtime monitor says.

    ``ps`` asks for the ancestors of every process: a run reads each stat once.
    """

    _shared: dict[str, Tree] = {}

    def __init__(self, proc_root: str = PROC) -> None:
        self.proc_root = proc_root
        self._stat: dict[int, tuple[int, str]] = {}
        self._dirs: dict[str, frozenset[str]] = {}
        self._monitors: dict[int, tuple[str, str, str, str, str] | None] = {}
        self._self_mnt: int | None = None

    @classmethod
    def of(cls, proc_root: str = PROC) -> Tree:
        """One tree a run: what one question read (a shim's bundle, a parent) the next need not."""
        if proc_root not in cls._shared:
            cls._shared[proc_root] = cls(proc_root)
        return cls._shared[proc_root]

    def descendants(self, pids: set[int]) -> set[int] | None:
        """Every process below these, from the kernel's children lists; None where it keeps none."""
        out: set[int] = set()
        todo = list(pids)
        while todo:
            pid = todo.pop()
            try:
                tasks = os.listdir(f"{self.proc_root}/{pid}/task")
            except OSError:
                if pid in pids:
                    return None
                continue
            for tid in tasks:
                raw = read_bytes(f"{self.proc_root}/{pid}/task/{tid}/children")
                if raw is None and pid in pids:
                    return None  # no CONFIG_PROC_CHILDREN, or a proc root of files
                for child in (raw or b"").split():
                    if int(child) not in out:
                        out.add(int(child))
                        todo.append(int(child))
        return out

    def parent(self, pid: int) -> tuple[int, str]:
        """(parent PID, comm); (0, "") when the process is gone."""
        if pid not in self._stat:
            raw = read_bytes(f"{self.proc_root}/{pid}/stat", 1024)
            self._stat[pid] = parse_stat(raw) if raw else (0, "")
        return self._stat[pid]

    def levels(self, pid: int, paths: list[str]) -> list[cgroups.Placement]:
        """The containers around ``pid``, outermost first, from the monitors among its ancestors."""
        out = []
        seen = {pid}
        parent, _ = self.parent(pid)
        while parent > 1 and parent not in seen:
            seen.add(parent)
            grand, comm = self.parent(parent)
            level = self.level(parent, comm, paths)
            if level is not None:
                out.append(level)
            parent = grand
        out.reverse()
        return out

    def level(self, pid: int, comm: str, paths: list[str]) -> cgroups.Placement | None:
        from ctrace.proc import cgroups

        if comm != CONMON and not comm.startswith(SHIM):
            return None
        if pid not in self._monitors:
            self._monitors[pid] = self._monitor(pid, comm)
        known = self._monitors[pid]
        if known is None:
            return None
        runtime, namespace, ident, bundle, name = known
        if runtime in ("containerd", "docker"):
            ident, bundle = self._sibling(ident, bundle, paths)
        return cgroups.Placement(ident, runtime, None, namespace, bundle, name)

    def _monitor(self, pid: int, comm: str) -> tuple[str, str, str, str, str] | None:
        try:
            if comm == CONMON:
                args = read_bytes(f"{self.proc_root}/{pid}/cmdline") or b""
                return conmon_level(os.fsdecode(args).split("\0"), self.view(pid))
            cwd = os.readlink(f"{self.proc_root}/{pid}/cwd")  # the shim runs in its bundle
        except (OSError, ValueError):
            return None
        bundle = self.view(pid) + cwd
        namespace = os.path.basename(os.path.dirname(cwd))
        return ("docker" if namespace == "moby" else "containerd"), namespace, os.path.basename(cwd), bundle, ""

    def view(self, pid: int) -> str:
        """The prefix that makes a path of ``pid``'s mount namespace a path ctrace can open."""
        if self._self_mnt is None:
            self._self_mnt = mount_ns("self", self.proc_root)
        if self._self_mnt is not None and mount_ns(pid, self.proc_root) == self._self_mnt:
            return ""
        return f"{self.proc_root}/{pid}/root"

    def _sibling(self, ident: str, bundle: str, paths: list[str]) -> tuple[str, str]:
        """A CRI shim serves a whole pod from the sandbox's bundle: the container is the
        bundle beside it whose ID is in the process's cgroup path (``docker exec`` too)."""
        parent = os.path.dirname(bundle)
        if parent not in self._dirs:
            try:
                self._dirs[parent] = frozenset(os.listdir(parent))
            except OSError:
                self._dirs[parent] = frozenset()
        ids = self._dirs[parent]
        for path in sorted(paths, key=len, reverse=True):
            for part in reversed(path.split("/")):
                part = part.removeprefix("cri-containerd-").removesuffix(".scope")
                if part in ids:
                    return part, f"{parent}/{part}"
        return ident, bundle


def parse_stat(raw: bytes) -> tuple[int, str]:
    """(PPid, comm) of /proc/PID/stat; comm may hold spaces and parentheses."""
    head, _, tail = raw.rpartition(b")")
    fields = tail.split()
    comm = head.partition(b"(")[2]
    return (int(fields[1]) if len(fields) > 1 else 0), os.fsdecode(comm)


def conmon_level(argv: list[str], view: str) -> tuple[str, str, str, str, str] | None:
    """(runtime, "", id, bundle, name) from conmon's arguments; None when they are not conmon's."""
    opts: dict[str, str] = {}
    flags = {"-c": "cid", "--cid": "cid", "-b": "bundle", "--bundle": "bundle", "-n": "name", "--name": "name"}
    flags["--exit-dir"] = "exit"
    for i, arg in enumerate(argv[:-1]):
        key, eq, value = arg.partition("=")
        if key in flags:
            opts.setdefault(flags[key], value if eq else argv[i + 1])
    if "cid" not in opts or "bundle" not in opts:
        return None
    # podman's conmon reports exits to /run/libpod/exits, CRI-O's to /var/run/crio/exits.
    runtime = "cri-o" if "crio" in opts.get("exit", "") else "podman"
    return runtime, "", opts["cid"], view + opts["bundle"], opts.get("name", "")
