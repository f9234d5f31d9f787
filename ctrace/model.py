"""Frozen result types; render.py turns them into text, JSON or YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Symbol(NamedTuple):
    """A traceable function: FUNC or IFUNC with a nonzero address.

    A NamedTuple, not a dataclass: a big Go binary has 100k of them and a
    frozen dataclass costs three times as much to build.
    """

    name: str
    address: int
    size: int
    source: str  # "symtab", "dynsym", "pclntab", "build-id", "debuglink", "minidebuginfo"


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    image: str
    runtime: str  # "docker", "containerd", "cri-o", "podman", "cri" (kubelet, runtime unknown)
    init_pid: int | None = None
    merged_dir: str | None = None  # GraphDriver.Data.MergedDir (overlay2 only)


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    container: str
    node: str
    agent: str | None = None  # the ctrace node agent pod on that node, if any


@dataclass(frozen=True)
class Process:
    """One process (thread group), keyed by its host PID."""

    pid: int
    nspid: tuple[int, ...]
    comm: str
    exe: str  # path as the process sees it, "(deleted)" suffix stripped
    deleted: bool = False
    runtime: str = "host"
    container: Container | None = None
    pod: Pod | None = None
    init: bool = False  # the container's init process
    remote: bool = False  # a pod on another node: no PID means anything here
    notes: tuple[str, ...] = ()  # resolver warnings, shown with the target


@dataclass(frozen=True)
class Binary:
    path: str  # inside the process's mount namespace, symlinks resolved
    host_path: str  # a path bpftrace can open from the host
    merged_path: str | None
    build_id: str | None
    stripped: bool
    language: str
    deleted: bool = False


@dataclass(frozen=True)
class Command:
    """One runnable command and the path form it uses (seed 2.5.1-2.5.3)."""

    form: str  # "proc-root", "exe", "merged", "pid-path"
    argv: tuple[str, ...]
    shell: str


@dataclass(frozen=True)
class Probe:
    """A matched function and the commands that probe it, the recommended first."""

    symbol: str
    address: int
    commands: tuple[Command, ...]
    attach: str  # how the function is named to bpftrace: "name" or "address"
    demangled: str | None = None  # C++/Rust: the readable name; the command uses the mangled one
    probe: str = "uprobe"  # "uprobe", "uretprobe" or "return" (a uprobe on each RET)
    points: tuple[str, ...] = ()  # the recommended command's attach points, for --run --all
    unsafe: bool = False  # bpftrace needs --unsafe for them
    perf: tuple[Command, ...] = ()  # --tool perf: probe, record, script, delete


@dataclass(frozen=True)
class Target:
    process: Process
    binary: Binary
    probes: tuple[Probe, ...] = ()
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Remote:
    """A pod on another node: the command that runs ctrace there, through the node agent."""

    pod: Pod
    command: Command | None  # None when no agent runs on that node
    note: str
