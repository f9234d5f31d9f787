"""From a target to probes: processes -> binaries -> matched functions -> commands."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ctrace import elf, emit, match
from ctrace.elf.reader import open_elf
from ctrace.errors import NotFound, UsageError
from ctrace.locate import ElfCache, Loaded, load, path_forms
from ctrace.model import Binary, Command, Probe, Process, Remote, Symbol, Target
from ctrace.resolvers import Context, choose

DEFAULT_MAX_FUNCS = 100


def processes(target: str, ctx: Context, runtime: str | None = None) -> list[Process]:
    return choose(target, ctx, runtime).resolve(target, ctx)


def select(symbols: Sequence[Symbol], patterns: Sequence[str]) -> tuple[list[Symbol], list[str]]:
    """Symbols matching any pattern (in pattern order, no repeats) and the patterns that matched none."""
    chosen: dict[tuple[str, int], Symbol] = {}
    missing = []
    for pattern in patterns:
        hits, _ = match.match(symbols, pattern)
        if not hits:
            missing.append(pattern)
        for sym in hits:
            chosen.setdefault((sym.name, sym.address), sym)
    return list(chosen.values()), missing


def probes(loaded: Loaded, symbols: Sequence[Symbol], ctx: Context) -> list[Probe]:
    index = emit.NameIndex(loaded.info.symbols)
    forms = path_forms(loaded, ctx)
    elf_file = open_elf(loaded.binary.host_path) if loaded.info.stripped else None
    out = []
    for sym in symbols:
        offset = elf_file.vaddr_to_offset(sym.address) if elf_file else None
        where = emit.site(sym, index, offset, loaded.info.stripped)
        if where is None:
            loaded.warnings.append(f"{sym.name!r} can be named neither by name nor by address; skipped")
            continue
        pid = loaded.process.pid
        cmds = [emit.command(form, pid, path, where, by_filter=f) for form, path, f in forms]
        usable: tuple[Command, ...] = tuple(c for c in cmds if c is not None)
        if usable:
            path = next(p for f, p, _ in forms if f == usable[0].form)
            out.append(Probe(sym.name, sym.address, usable, where.kind, where.text, where.unsafe, path))
    return out


@dataclass(frozen=True)
class Plan:
    targets: list[Target]
    remote: list[Remote]


def plan(
    target: str,
    patterns: Sequence[str],
    ctx: Context,
    runtime: str | None = None,
    max_funcs: int = DEFAULT_MAX_FUNCS,
    lib: str | None = None,
) -> Plan:
    """Targets on this host, and pods elsewhere with the command to run there."""
    for pattern in patterns:
        match.check_pattern(pattern)
    procs = processes(target, ctx, runtime)
    remote = [_remote(p, patterns, ctx) for p in procs if p.remote and p.pod is not None]
    local = [p for p in procs if not p.remote]
    return Plan(targets(local, patterns, ctx, max_funcs, lib) if local else [], remote)


def _remote(proc: Process, patterns: Sequence[str], ctx: Context) -> Remote:
    pod = proc.pod
    assert pod is not None
    if pod.agent is None:
        return Remote(pod, None, f"no ctrace agent runs on node {pod.node}: kubectl apply -f manifests/")
    cmd = emit.agent_command(pod, pod.agent, patterns, ctx.k8s.context)
    return Remote(pod, cmd, f"pod runs on node {pod.node}; ctrace runs there through agent {pod.agent}")


def targets(
    procs: Sequence[Process],
    patterns: Sequence[str],
    ctx: Context,
    max_funcs: int = DEFAULT_MAX_FUNCS,
    lib: str | None = None,
) -> list[Target]:
    cache = ElfCache()
    loaded = _load_all(procs, ctx, cache, lib)
    out = []
    failures = []
    for item in loaded:
        chosen, missing = select(item.info.symbols, patterns)
        if missing:
            failures.append((item, missing))
            continue
        if len(chosen) > max_funcs:
            raise UsageError(
                f"{', '.join(patterns)} matches {len(chosen)} functions in {item.binary.path}",
                f"narrow the pattern, or raise the limit with --max-funcs {len(chosen)}",
            )
        found = probes(item, chosen, ctx)
        out.append(Target(item.process, item.binary, tuple(found), tuple(item.warnings)))
    if not out:
        raise _no_match(*failures[0])
    return out


def _load_all(procs: Sequence[Process], ctx: Context, cache: ElfCache, lib: str | None) -> list[Loaded]:
    """Load every process; one that exits meanwhile is dropped, unless it was the only one."""
    loaded, errors = [], []
    for proc in procs:
        try:
            loaded.append(load(proc, ctx, cache, lib))
        except NotFound as err:
            errors.append(err)
    if not loaded and errors:
        raise errors[0]
    return loaded


def _no_match(item: Loaded, missing: list[str]) -> NotFound:
    near = match.closest(item.info.symbols, missing[0])
    hint = f"closest names: {', '.join(near)}" if near else f"list them with 'ctrace symbols {item.binary.host_path}'"
    if item.info.stripped:
        hint = f"{item.binary.path} is stripped: only .dynsym functions are traceable; " + hint
    return NotFound(f"no function matches {missing[0]!r} in {item.binary.path} (process {item.process.pid})", hint)


def symbols_of(what: str, ctx: Context, runtime: str | None = None) -> tuple[Binary, elf.ElfInfo]:
    """Symbols of a file path, or of the binary of a target's process."""
    if runtime is None and os.path.lexists(what) and ("/" in what or not _is_process(what, ctx)):
        info = elf.inspect(what)
        return _file_binary(what, info), info
    if what.startswith(("/", "./", "../")):
        raise NotFound(f"{what} does not exist", "give a binary's path, a process name or pid:N")
    procs = processes(what, ctx, runtime)
    if len({p.exe for p in procs}) > 1:
        pids = ", ".join(str(p.pid) for p in procs[:8])
        raise UsageError(f"{what!r} names processes running different binaries ({pids})", "pick one with pid:N")
    loaded = load(procs[0], ctx, ElfCache())
    return loaded.binary, loaded.info


def _is_process(what: str, ctx: Context) -> bool:
    try:
        return bool(processes(what, ctx))
    except NotFound:
        return False


def _file_binary(path: str, info: elf.ElfInfo) -> Binary:
    real = os.path.realpath(path)
    return Binary(real, real, None, info.build_id, info.stripped, info.language)
