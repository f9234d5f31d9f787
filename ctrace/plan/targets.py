"""From a target to probes: processes -> binaries -> matched functions -> commands (probes.py).

Also ``symbols_of``: the binary of a path or of a target's process, for ``ctrace symbols``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Collection, Mapping, Sequence

from ctrace import elf
from ctrace.bpftrace import actions, binding, emit
from ctrace.elf import cache as elf_cache
from ctrace.errors import CtraceError, NotFound, UsageError
from ctrace.model import Binary, Process, Remote, Target
from ctrace.plan import locate, match
from ctrace.plan.locate import ElfCache, Loaded, load
from ctrace.plan.match import select
from ctrace.plan.probes import probes
from ctrace.plan.request import Plan, Request
from ctrace.proc import placement
from ctrace.resolvers import Context, choose


def processes(target: str, ctx: Context, runtime: str | None = None) -> list[Process]:
    return _with_containers(choose(target, ctx, runtime).resolve(target, ctx), ctx)


def _with_containers(procs: list[Process], ctx: Context) -> list[Process]:
    """A process found by PID (or by a resolver that knows no containers) still gets its
    container, from its cgroup, so ``pid:N`` of a containerised process offers MergedDir too."""
    where = {}
    for p in procs:
        if p.container is None and not p.remote:
            try:
                found = placement.placement(p.pid, ctx.proc_root)
            except CtraceError:
                continue
            if found.container_id:
                where[p.pid] = found
    if not where:
        return procs
    from ctrace.resolvers import runtimes

    annotated = {p.pid: p for p in runtimes.annotate([p for p in procs if p.pid in where], ctx, where)}
    return [annotated.get(p.pid, p) for p in procs]


def plan(request: Request, ctx: Context) -> Plan:
    """Targets on this host, and pods elsewhere with the command to run there."""
    for pattern in request.patterns:
        match.check_pattern(pattern)
    actions.check(request.action, request.probe)
    procs = processes(request.target, ctx, request.runtime)
    remote = [_remote(p, request.patterns, ctx) for p in procs if p.remote and p.pod is not None]
    local = [p for p in procs if not p.remote]
    return Plan(targets(local, request, ctx) if local else [], remote)


def _remote(proc: Process, patterns: Sequence[str], ctx: Context) -> Remote:
    pod = proc.pod
    assert pod is not None
    said = "".join(f"; {n}" for n in proc.notes)
    if pod.agent is None:
        return Remote(pod, None, f"no ctrace node agent runs on node {pod.node}: run ctrace on that node{said}")
    cmd = emit.agent_command(pod, pod.agent, patterns, ctx.k8s.context)
    return Remote(pod, cmd, f"pod runs on node {pod.node}; ctrace runs there through agent {pod.agent}{said}")


def targets(procs: Sequence[Process], request: Request, ctx: Context) -> list[Target]:
    cache = ElfCache(ctx.cache_dir)
    mates = binding.whole_containers(procs, request.target, ctx.proc_root, request.runtime)
    loaded = _load_all(procs, ctx, cache, request.lib, {pid: {m.pid for m in s.members} for pid, s in mates.items()})
    whole = binding.whole_containers([i.process for i in loaded], request.target, ctx.proc_root, request.runtime)
    out = []
    failures = []
    gone: list[NotFound] = []
    for item in loaded:
        chosen, missing = select(item.info.symbols, request.patterns, item.info.demangled, item.warnings)
        if missing and (fetched := _debuginfod(item, ctx)) is not None:
            item = fetched
            chosen, missing = select(item.info.symbols, request.patterns, item.info.demangled, item.warnings)
        if missing:
            failures.append((item, missing))
            continue
        if len(chosen) > request.max_funcs:
            raise UsageError(
                f"{', '.join(request.patterns)} matches {len(chosen)} functions in {item.binary.path}",
                f"narrow the pattern, or raise the limit with --max-funcs {len(chosen)}",
            )
        if request.probe == "uretprobe" and item.info.language == "go":
            raise _go_uretprobe(item)
        actions.check_language(actions.ACTIONS[request.action], item.info.language, item.binary.path)
        try:
            found = probes(item, chosen, ctx, request, whole.get(item.process.pid))
        except NotFound as err:  # the process exited while its file was read
            gone.append(err)
            continue
        item.warnings.extend(_run_warnings(item, request, ctx))
        out.append(Target(item.process, item.binary, tuple(found), tuple(item.warnings)))
    if not out and failures:
        raise _no_match(*failures[0])
    if not out:
        raise gone[0] if gone else NotFound("every process of the target exited", "run it again")
    return out


def _run_warnings(item: Loaded, request: Request, ctx: Context) -> list[str]:
    """What will make the output short or differ: no frame pointers, no bpftrace found."""
    found = _frame_pointers(item, ctx) if _walks_stacks(request.action, item.info.language) else []
    if not request.dialect.known:
        found.append(
            f"{request.dialect.program} was not found: the commands are written for bpftrace "
            f"{request.dialect.name}, the oldest ctrace knows; --bpftrace PATH names another"
        )
    return found


def _walks_stacks(action: str, language: str) -> bool:
    """Whether the action's program reads ustack (any row, whatever its name)."""
    try:
        text = actions.ACTIONS[action].program(actions.Block(("uprobe:/f:f",), "", "f", language))
    except (KeyError, ValueError, IndexError):
        return False
    return "ustack" in text


def _frame_pointers(item: Loaded, ctx: Context) -> list[str]:
    from ctrace.plan import framepointers

    info, pid = item.info, item.process.pid
    return framepointers.target_warnings(item.binary.host_path, info.language, info.symbols, pid, ctx.proc_root)


def _load_all(
    procs: Sequence[Process], ctx: Context, cache: ElfCache, lib: str | None, mates: Mapping[int, Collection[int]]
) -> list[Loaded]:
    """Load every process; one that exits meanwhile is dropped, unless it was the only one.
    ``mates``: each process of a container the target names -> the container's processes."""
    loaded, errors = [], []
    for proc in procs:
        try:
            loaded.append(load(proc, ctx, cache, lib, mates.get(proc.pid, ())))
        except NotFound as err:
            errors.append(err)
    if not loaded and errors:
        raise errors[0]
    return loaded


def _go_uretprobe(item: Loaded) -> UsageError:
    return UsageError(
        f"--probe uretprobe on Go binary {item.binary.path} would crash it: a uretprobe swaps the return "
        "address on the goroutine stack for a trampoline, and Go moves (copies) goroutine stacks",
        "use --probe return: a uprobe on each RET instruction of the function",
    )


def _debuginfod(item: Loaded, ctx: Context) -> Loaded | None:
    """The process's binary again with a debug file a debuginfod server has for its build-id."""
    from ctrace.elf import debuginfo

    root = f"{ctx.proc_root}/{item.process.pid}/root"
    found = debuginfo.fetch_missing(item.info, item.binary.host_path)
    if found is None:
        return None
    info = ElfCache(ctx.cache_dir).inspect(item.binary.host_path, root, os.path.dirname(item.binary.path))
    stale = f"{item.binary.path} is stripped"
    note = f"{item.binary.path}: its debug file came from a debuginfod server by build-id ({found})"
    return item._replace(info=info, warnings=[*(w for w in item.warnings if not w.startswith(stale)), note])


def _no_match(item: Loaded, missing: list[str]) -> NotFound:
    near = match.closest(item.info.symbols, missing[0])
    listing = shlex.join(["ctrace", "symbols", item.binary.host_path])  # a path may hold spaces or quotes
    hint = f"closest names: {', '.join(near)}" if near else f"list them with '{listing}'"
    hint = locate.elsewhere(item, missing[0]) or hint
    if item.info.stripped:
        found = ", ".join(item.info.sources()) or "none of them"
        hint = (
            f"{item.binary.path} is stripped: only .dynsym, a Go table or a debug file name functions ({found}); "
            + hint
        )
        why = _no_debug_file(item)
        if why is not None:
            return NotFound(f"no function matches {missing[0]!r} in {item.binary.path} ({why[0]})", f"{why[1]}. {hint}")
    return NotFound(f"no function matches {missing[0]!r} in {item.binary.path} (process {item.process.pid})", hint)


def _no_debug_file(item: Loaded) -> tuple[str, str] | None:
    from ctrace.elf import debuginfo

    root = item.binary.host_path.removesuffix(item.binary.path) or "/"
    return debuginfo.explain(item.info, item.binary.host_path, item.binary.path, root)


def symbols_of(what: str, ctx: Context, runtime: str | None = None) -> tuple[Binary, elf.ElfInfo]:
    """Symbols of a file path, or of the binary of a target's process."""
    if runtime is None and os.path.lexists(what) and ("/" in what or not _is_process(what, ctx)):
        info = elf_cache.inspect(what, ctx.cache_dir)
        return elf.file_binary(what, info.build_id, info.stripped, info.language), info
    if what.startswith(("/", "./", "../")):
        raise NotFound(f"{what} does not exist", "give a binary's path, a process name or pid:N")
    procs = processes(what, ctx, runtime)
    if len({p.exe for p in procs}) > 1:
        pids = ", ".join(str(p.pid) for p in procs[:8])
        raise UsageError(f"{what!r} names processes running different binaries ({pids})", "pick one with pid:N")
    loaded = load(procs[0], ctx, ElfCache(ctx.cache_dir))
    return loaded.binary, loaded.info


def _is_process(what: str, ctx: Context) -> bool:
    try:
        return bool(processes(what, ctx))
    except NotFound:
        return False
