"""From a target to probes: processes -> binaries -> matched functions -> commands."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ctrace import elf, emit, match, paths, sites
from ctrace.elf.reader import ElfFile, open_elf
from ctrace.errors import NotFound, NotTraceable, UsageError
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

    def __init__(self) -> None:
        self._by_inode: dict[tuple[int, int], elf.ElfInfo] = {}

    def inspect(self, path: str, root: str = "/", binary_dir: str | None = None) -> elf.ElfInfo:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        if key not in self._by_inode:
            self._by_inode[key] = elf.inspect(path, root, binary_dir)
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
    info = cache.inspect(host_path, f"{pid_dir}/root", os.path.dirname(path))
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
        counts = ", ".join(f"{n} from {src}" for src, n in info.sources().items()) or "none"
        warnings.append(f"{path} is stripped (no .symtab): functions found: {counts}")
    return Loaded(proc, binary, info, warnings)


def select(
    symbols: Sequence[Symbol], patterns: Sequence[str], aliases: Mapping[str, str] | None = None
) -> tuple[list[Symbol], list[str]]:
    """Symbols matching any pattern (in pattern order, no repeats) and the patterns that matched none.

    ``aliases`` are demangled names, matched as well as the mangled ones."""
    chosen: dict[tuple[str, int], Symbol] = {}
    missing = []
    for pattern in patterns:
        hits, _ = match.match(symbols, pattern, aliases)
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


# Names bpftrace 0.17 itself finds in the file (bcc reads .symtab/.dynsym); the
# others (Go table, debug files) are probed by address (see ctrace/sites.py).
_NAMED_SOURCES = ("symtab", "dynsym")


def probes(loaded: Loaded, symbols: Sequence[Symbol], ctx: Context, kind: str = "uprobe") -> list[Probe]:
    index = emit.NameIndex(loaded.info.symbols)
    elf_file = open_elf(loaded.binary.host_path)
    # What bpftrace sees in the file depends on the path it is given (sites.bcc_visible).
    forms = [(form, path, sites.bcc_visible(loaded.info, path)) for form, path in path_forms(loaded, ctx)]
    out = []
    for sym in symbols:
        made = [_command(loaded, elf_file, sym, index, form, kind) for form in forms]
        usable = [m for m in made if isinstance(m, tuple)]
        if not usable:
            refusal = next((m for m in made if isinstance(m, NotTraceable)), None)
            if refusal is not None:
                raise refusal
            loaded.warnings.append(f"{sym.name!r} can be named neither by name nor by address; skipped")
            continue
        shown = loaded.info.demangled.get(sym.name)
        out.append(Probe(sym.name, sym.address, tuple(c for c, _ in usable), usable[0][1], shown, kind))
    return out


def _command(
    loaded: Loaded,
    elf_file: ElfFile,
    sym: Symbol,
    index: emit.NameIndex,
    form: tuple[str, str, sites.Spans],
    kind: str,
) -> tuple[Command, str] | NotTraceable | None:
    """One path form's command and how it attaches; a refusal is returned, not raised,
    so that another form may still work."""
    name, path, spans = form
    try:
        where = _sites(loaded, elf_file, sym, index, spans, kind)
    except NotTraceable as err:
        return err
    bpf_kind = "uretprobe" if kind == "uretprobe" else "uprobe"
    cmd = emit.command(name, loaded.process.pid, path, where, kind=bpf_kind) if where else None
    return (cmd, where[0].kind) if cmd is not None else None


def _sites(
    loaded: Loaded, elf_file: ElfFile, sym: Symbol, index: emit.NameIndex, spans: sites.Spans, kind: str
) -> list[emit.Site]:
    if kind == "return":
        return sites.return_sites(sym, elf_file, spans, loaded.binary.path)
    named = emit.name_site(sym, index) if sym.source in _NAMED_SOURCES else None
    where = named or sites.entry_site(sym, elf_file, spans)
    return [where] if where is not None else []


def targets(
    target: str,
    patterns: Sequence[str],
    ctx: Context,
    runtime: str | None = None,
    max_funcs: int = DEFAULT_MAX_FUNCS,
    kind: str = "uprobe",
) -> list[Target]:
    for pattern in patterns:
        match.check_pattern(pattern)
    cache = ElfCache()
    loaded = [load(p, ctx, cache) for p in processes(target, ctx, runtime)]
    out = []
    failures = []
    for item in loaded:
        chosen, missing = select(item.info.symbols, patterns, item.info.demangled)
        if missing:
            failures.append((item, missing))
            continue
        if len(chosen) > max_funcs:
            raise UsageError(
                f"{', '.join(patterns)} matches {len(chosen)} functions in {item.binary.path}",
                f"narrow the pattern, or raise the limit with --max-funcs {len(chosen)}",
            )
        if kind == "uretprobe" and item.info.language == "go":
            raise _go_uretprobe(item)
        found = probes(item, chosen, ctx, kind)
        out.append(Target(item.process, item.binary, tuple(found), tuple(item.warnings)))
    if not out:
        raise _no_match(*failures[0])
    return out


def _go_uretprobe(item: Loaded) -> UsageError:
    return UsageError(
        f"--probe uretprobe on Go binary {item.binary.path} would crash it: a uretprobe swaps the return "
        "address on the goroutine stack for a trampoline, and Go moves (copies) goroutine stacks",
        "use --probe return: a uprobe on each RET instruction of the function",
    )


def _no_match(item: Loaded, missing: list[str]) -> NotFound:
    near = match.closest(item.info.symbols, missing[0])
    hint = f"closest names: {', '.join(near)}" if near else f"list them with 'ctrace symbols {item.binary.host_path}'"
    if item.info.stripped:
        found = ", ".join(item.info.sources()) or "none of them"
        hint = (
            f"{item.binary.path} is stripped: only .dynsym, a Go table or a debug file name functions ({found}); "
            + hint
        )
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
