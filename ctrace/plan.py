"""From a target to probes: processes -> binaries -> matched functions -> commands."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ctrace import elf, emit, match, paths
from ctrace.elf import cache as elf_cache
from ctrace.elf.reader import open_elf
from ctrace.errors import NotFound, UsageError
from ctrace.model import Binary, Command, Probe, Process, Symbol, Target
from ctrace.resolvers import Context, choose

DEFAULT_MAX_FUNCS = 100


@dataclass
class Loaded:
    """A binary of one process, with what its ELF file told us."""

    process: Process
    binary: Binary
    info: elf.ElfInfo
    warnings: list[str] = field(default_factory=list)


class ElfCache:
    """One parse per file, however many processes run it (keyed by device and inode)."""

    def __init__(self, cache_dir: str | None = None) -> None:
        self._by_inode: dict[tuple[int, int], elf.ElfInfo] = {}
        self.cache_dir = cache_dir  # the on-disk cache across runs (elf/cache.py)

    def inspect(self, path: str) -> elf.ElfInfo:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        if key not in self._by_inode:
            self._by_inode[key] = elf_cache.inspect(path, self.cache_dir)
        return self._by_inode[key]


def processes(target: str, ctx: Context, runtime: str | None = None) -> list[Process]:
    return choose(target, ctx, runtime).resolve(target, ctx)


def load(proc: Process, ctx: Context, cache: ElfCache) -> Loaded:
    """Where the process's binary is, seen from inside and from the host."""
    pid_dir = f"{ctx.proc_root}/{proc.pid}"
    warnings = []
    path, host_path = proc.exe, f"{pid_dir}/exe"
    if proc.deleted:
        warnings.append(
            f"{proc.exe} was deleted or replaced after process {proc.pid} started; "
            f"probing it through /proc/{proc.pid}/exe"
        )
    else:
        try:
            path = paths.resolve_in_root(f"{pid_dir}/root", proc.exe)
        except NotFound:
            path = proc.exe
        candidate = f"{pid_dir}/root{path}"
        if paths.same_file(candidate, host_path):
            host_path = candidate
        else:
            warnings.append(
                f"{path} inside process {proc.pid}'s root is not the running binary; using /proc/{proc.pid}/exe"
            )
    info = cache.inspect(host_path)
    binary = Binary(
        path=path,
        host_path=host_path,
        merged_path=None,
        build_id=info.build_id,
        stripped=info.stripped,
        language=info.language,
        deleted=proc.deleted,
    )
    if info.stripped:
        warnings.append(
            f"{path} is stripped (no .symtab): only its {len(info.symbols)} .dynsym functions are traceable"
        )
    return Loaded(proc, binary, info, warnings)


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


def path_forms(loaded: Loaded, ctx: Context) -> list[tuple[str, str]]:
    """(form, path) pairs to try, the recommended first."""
    pid = loaded.process.pid
    forms = [("proc-root" if not loaded.binary.deleted else "exe", loaded.binary.host_path)]
    exe = f"{ctx.proc_root}/{pid}/exe"
    if loaded.binary.host_path != exe:
        forms.append(("exe", exe))
    return forms


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
        cmds = [emit.command(form, loaded.process.pid, path, where) for form, path in forms]
        usable: tuple[Command, ...] = tuple(c for c in cmds if c is not None)
        if usable:
            out.append(Probe(sym.name, sym.address, usable, where.kind))
    return out


def targets(
    target: str,
    patterns: Sequence[str],
    ctx: Context,
    runtime: str | None = None,
    max_funcs: int = DEFAULT_MAX_FUNCS,
) -> list[Target]:
    for pattern in patterns:
        match.check_pattern(pattern)
    cache = ElfCache(ctx.cache_dir)
    loaded = [load(p, ctx, cache) for p in processes(target, ctx, runtime)]
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


def _no_match(item: Loaded, missing: list[str]) -> NotFound:
    near = match.closest(item.info.symbols, missing[0])
    hint = f"closest names: {', '.join(near)}" if near else f"list them with 'ctrace symbols {item.binary.host_path}'"
    if item.info.stripped:
        hint = f"{item.binary.path} is stripped: only .dynsym functions are traceable; " + hint
    return NotFound(f"no function matches {missing[0]!r} in {item.binary.path} (process {item.process.pid})", hint)


def symbols_of(what: str, ctx: Context, runtime: str | None = None) -> tuple[Binary, elf.ElfInfo]:
    """Symbols of a file path, or of the binary of a target's process."""
    if runtime is None and os.path.lexists(what) and ("/" in what or not _is_process(what, ctx)):
        info = elf_cache.inspect(what, ctx.cache_dir)
        return _file_binary(what, info), info
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


def _file_binary(path: str, info: elf.ElfInfo) -> Binary:
    real = os.path.realpath(path)
    return Binary(real, real, None, info.build_id, info.stripped, info.language)
