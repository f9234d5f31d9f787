"""Every container runtime ctrace knows, in one place, and what ``target``, ``ps`` and ``ns`` ask of them.

A runtime is a module behind ``base.Runtime`` (``find`` by name, ``describe``
by placement, the root filesystem in ``Container.rootfs``), listed once in
``registry.RUNTIMES`` and imported by ``runtimes()``; nothing else imports a runtime's module. The order of the list
is the order hits are kept in when two runtimes report one container: docker
before containerd, whose ``moby`` namespace holds docker's containers.
"""

from __future__ import annotations

import os

from ctrace.errors import CtraceError, EnvironmentProblem
from ctrace.model import Container, Process
from ctrace.proc import placement, procfs
from ctrace.proc.monitors import CONMON, SHIM, Tree
from ctrace.record import TYPE_CHECKING, Record
from ctrace.resolvers import host
from ctrace.resolvers.base import Context, Hit, Monitors, Runtime

if TYPE_CHECKING:
    from ctrace.proc.cgroups import Placement


def runtimes() -> dict[str, Runtime]:
    """The registry's modules (registry.RUNTIMES), in the order hits are kept."""
    from importlib import import_module

    from ctrace.resolvers.registry import RUNTIMES

    # A module is a Runtime by its names (base.Runtime); tests/test_layout.py checks each of the registry.
    return {name: import_module(f"ctrace.resolvers.{module}") for name, module in RUNTIMES.items()}


class Scan(Record):
    """One pass over /proc: the processes called by a name, and the runtime monitors."""

    named: tuple[int, ...]
    monitors: Monitors


def scan(name: str | None, ctx: Context) -> Scan:
    want = os.fsencode(name) + b"\n" if name else b""
    named, shims, conmons = [], [], []
    for pid in procfs.pids(ctx.proc_root):
        comm = procfs.read_bytes(f"{ctx.proc_root}/{pid}/comm", 4096)
        if comm is None:
            continue  # exited while we looked
        if comm.startswith(SHIM.encode()):
            shims.append(pid)
        elif comm == CONMON.encode() + b"\n":
            conmons.append(pid)
        if name and pid != ctx.self_pid and host.named(pid, name, want, comm, ctx.proc_root):
            named.append(pid)
    return Scan(tuple(named), Monitors(tuple(shims), tuple(conmons)))


def find(target: str, ctx: Context, monitors: Monitors, only: str | None = None) -> tuple[list[Hit], list[CtraceError]]:
    """Hits of every runtime (or ``only`` one), one per container, and the runtimes that could not answer."""
    hits: dict[str, Hit] = {}
    problems: list[CtraceError] = []
    for name, runtime in runtimes().items():
        if only is not None and name != only:
            continue
        try:
            found = runtime.find(target, ctx, monitors)
        except EnvironmentProblem as err:
            problems.append(err)
            continue
        for hit in found:
            hits.setdefault(hit.container.id, hit)
    return list(hits.values()), problems


class Describer:
    """Containers and pods of placed processes, each described once a run."""

    def __init__(self, ctx: Context, known: list[Hit] | None = None) -> None:
        self.ctx = ctx
        self.cache: dict[tuple[str, str], Hit | None] = {(h.container.runtime, h.container.id): h for h in known or []}

    def hit(self, where: Placement) -> Hit | None:
        if where.container_id is None or where.runtime is None:
            return None
        key = (where.runtime, where.container_id)
        if key not in self.cache:
            runtime = runtimes().get(where.runtime)
            try:
                found = runtime.describe(where, self.ctx) if runtime is not None else None
            except CtraceError:
                found = None  # a state file it cannot read: the ID is still worth showing
            self.cache[key] = found or Hit(Container(where.container_id, "", "", where.runtime))
        return self.cache[key]

    def process(self, proc: Process, where: Placement | None) -> Process:
        """``proc`` with its container (the node it runs in as ``node``) and its pod."""
        if where is None or where.container_id is None:
            return proc
        node: Container | None = None
        inner: Hit | None = None
        for level in (*where.outer, where):
            inner = self.hit(level)
            if inner is not None:
                node = inner.container._replace(node=node)
        if inner is None or node is None:
            return proc
        pod = inner.pod
        if pod is not None and node.node is not None:
            pod = pod._replace(node=node.node.name or node.node.id[:12])  # a kind node is its container
        init = node.init_pid == proc.pid if node.init_pid else (len(proc.nspid) > 1 and proc.nspid[-1] == 1)
        return proc._replace(runtime=node.runtime, container=node, pod=pod, init=init)


def annotate(procs: list[Process], ctx: Context, where: dict[int, Placement] | None = None) -> list[Process]:
    """``ps``, ``ns`` and targets found by PID: each process with its container and pod."""
    where = placement.placements(ctx.proc_root) if where is None else where
    describer = Describer(ctx)
    return [describer.process(p, where.get(p.pid)) for p in procs]


def processes(hits: list[Hit], extra: tuple[int, ...], ctx: Context, monitors: Monitors) -> list[Process]:
    """The processes of these containers, and the ``extra`` PIDs (names that matched), each once.

    Only processes below the containers' own shims or conmons are placed (one
    stat read each to know); where no monitor is seen, those whose cgroup names an ID.
    """
    tree = Tree.of(ctx.proc_root)
    ids = {h.container.id for h in hits}
    where: dict[int, Placement] = {}
    if hits:
        serving = ids | {h.group for h in hits if h.group}
        mine = {m for m in (*monitors.shims, *monitors.conmons) if _serves(tree, m, serving)}
        below = tree.descendants(mine) if mine else None
        if mine and below is None:
            below = {pid for pid in procfs.pids(ctx.proc_root) if _below(tree, pid, mine)}
        if below is not None:
            candidates = sorted(below)
            where = {pid: p for pid in candidates if (p := _placed(pid, ctx, tree)) is not None}
        else:
            where = placement.placements(ctx.proc_root, tuple(i.encode() for i in ids))
        where = {
            pid: p for pid, p in where.items() if p.container_id in ids or any(o.container_id in ids for o in p.outer)
        }
    for pid in extra:
        if pid not in where and (found := _placed(pid, ctx, tree)) is not None:
            where[pid] = found
    describer = Describer(ctx, hits)
    out = []
    for pid in sorted(set(where) | set(extra)):
        if pid == ctx.self_pid:
            continue
        try:
            proc = host.process(pid, ctx)
        except CtraceError:
            continue  # exited, or a kernel thread
        out.append(describer.process(proc, where.get(pid)))
    return out


def _placed(pid: int, ctx: Context, tree: Tree) -> Placement | None:
    try:
        return placement.placement(pid, ctx.proc_root, tree)
    except CtraceError:
        return None


def _serves(tree: Tree, monitor: int, ids: set[str]) -> bool:
    """Whether a shim or conmon runs in the bundle of one of these containers (or of their pod's sandbox)."""
    _, comm = tree.parent(monitor)
    level = tree.level(monitor, comm, [])
    return level is not None and level.container_id in ids


def _below(tree: Tree, pid: int, monitors: set[int]) -> bool:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        pid = tree.parent(pid)[0]
        if pid in monitors:
            return True
    return False


def label(hit: Hit) -> str:
    c = hit.container
    space = f" in namespace {c.namespace}" if c.namespace and c.runtime == "containerd" else ""
    pod = f" of pod {hit.pod.namespace}/{hit.pod.name}" if hit.pod is not None else ""
    return f"{c.runtime} container {c.name or c.id[:12]} ({c.id[:12]}){space}{pod}"


def list_hint() -> str:
    return "list containers with " + ", ".join(f"'{r.LIST}'" for r in runtimes().values())
