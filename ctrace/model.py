"""Result types; render.py turns them into text, JSON or YAML.

NamedTuples, not dataclasses: importing dataclasses (and inspect, which it
imports) and building a class with it is paid on every run, and is a large share
of `ctrace symbols` on a small library (issue "Speed"; benchmarks/README.md).
"""

from __future__ import annotations

from ctrace.record import Record

AGENT_NAMESPACE = "ctrace-system"  # where manifests/ run the node agent


class Symbol(Record):
    """A traceable function: FUNC or IFUNC with a nonzero address.

    A big Go binary has 100k of them; symtab.NEW builds them without the
    Python-level __new__.
    """

    name: str
    address: int
    size: int
    source: str  # "symtab", "dynsym", "pclntab", "build-id", "debuglink", "minidebuginfo"


class Container(Record):
    id: str
    name: str
    image: str
    runtime: str  # "docker", "containerd", "cri-o", "podman", "cri" (kubelet, runtime unknown)
    init_pid: int | None = None
    merged_dir: str | None = None  # GraphDriver.Data.MergedDir (overlay2 only)
    namespace: str = ""  # containerd's namespace ("k8s.io", "moby", or the user's)
    rootfs: str | None = None  # the root filesystem on the host: a containerd task's rootfs, podman's mount
    node: Container | None = None  # the container this one's runtime runs in (a kind node)


class Pod(Record):
    namespace: str
    name: str
    uid: str
    container: str
    node: str
    agent: str | None = None  # the ctrace node agent pod on that node, if any


class Process(Record):
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


class Binary(Record):
    path: str  # inside the process's mount namespace, symlinks resolved
    host_path: str  # a path bpftrace can open from the host
    merged_path: str | None
    build_id: str | None
    stripped: bool
    language: str
    deleted: bool = False


class Command(Record):
    """One runnable command and the path form it uses (the tracing-basics post, 2.5.1-2.5.3)."""

    form: str  # "proc-root", "exe", "merged", "pid-path"
    argv: tuple[str, ...]
    shell: str


class Probe(Record):
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
    where: str = ""  # the name or number in the command, and the vaddr where it differs
    why_unsafe: str = ""  # why the command carries --unsafe, when it does
    bound: str = ""  # what the recommended command admits (binding.statement)
    path: str = ""  # the file the recommended command opens, to attach each file once (--run --all)
    exits: tuple[str, ...] = ()  # latency: where the recommended command sees the call return
    exit_kind: str = ""  # how ``exits`` are probed: "uretprobe", or "uprobe" on each RET (Go)


class Target(Record):
    process: Process
    binary: Binary
    probes: tuple[Probe, ...] = ()
    warnings: tuple[str, ...] = ()


class Remote(Record):
    """A pod on another node: the command that runs ctrace there, through the node agent."""

    pod: Pod
    command: Command | None  # None when no agent runs on that node
    note: str
