"""From a target to probes: processes -> binaries -> matched functions -> commands."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence

from ctrace import actions, binding, elf, emit, locate, match, procfs, sites
from ctrace.dialect import Dialect
from ctrace.elf import cache as elf_cache
from ctrace.elf.reader import ElfFile, open_elf
from ctrace.errors import CtraceError, NotFound, NotTraceable, UsageError
from ctrace.locate import ElfCache, Loaded, load, own_mount_ns, path_forms
from ctrace.model import Binary, Command, Probe, Process, Remote, Symbol, Target
from ctrace.record import Record
from ctrace.resolvers import Context, choose

DEFAULT_MAX_FUNCS = 100


class Request(Record):
    """What ``ctrace target`` was asked for: handed down whole instead of argument by argument."""

    target: str
    patterns: tuple[str, ...]
    runtime: str | None = None
    max_funcs: int = DEFAULT_MAX_FUNCS
    lib: str | None = None
    probe: str = "uprobe"  # --probe: "uprobe" (the entry), "uretprobe", "return" (a uprobe on each RET)
    action: str = "stack"  # a row of actions.ACTIONS
    tool: str = "bpftrace"
    dialect: Dialect = Dialect()  # the bpftrace that will run the programs


def processes(target: str, ctx: Context, runtime: str | None = None) -> list[Process]:
    return _with_containers(choose(target, ctx, runtime).resolve(target, ctx), ctx)


def _with_containers(procs: list[Process], ctx: Context) -> list[Process]:
    """A process found by PID (or by a resolver that knows no containers) still gets its
    container, from its cgroup, so ``pid:N`` of a containerised process offers MergedDir too."""
    where = {}
    for p in procs:
        if p.container is None and not p.remote:
            try:
                found = procfs.placement(p.pid, ctx.proc_root)
            except CtraceError:
                continue
            if found.container_id:
                where[p.pid] = found
    if not where:
        return procs
    from ctrace.resolvers import runtimes

    annotated = {p.pid: p for p in runtimes.annotate([p for p in procs if p.pid in where], ctx, where)}
    return [annotated.get(p.pid, p) for p in procs]


def select(
    symbols: Sequence[Symbol],
    patterns: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    notes: list[str] | None = None,
) -> tuple[list[Symbol], list[str]]:
    """Symbols matching any pattern (in pattern order, no repeats) and the patterns that matched none.

    ``aliases`` are demangled names, matched as well as the mangled ones; ``notes`` gets
    a line for each pattern that matched only as a substring."""
    chosen: dict[tuple[str, int], Symbol] = {}
    missing = []
    for pattern in patterns:
        hits, tier = match.match(symbols, pattern, aliases)
        note = match.loose(pattern, hits, tier)
        if note and notes is not None:
            notes.append(note)
        if not hits:
            missing.append(pattern)
        for sym in hits:
            chosen.setdefault((sym.name, sym.address), sym)
    return list(chosen.values()), missing


class Form(Record):
    """One way to name the file to bpftrace (the tracing-basics post, 2.5.1-2.5.3), and what bcc sees through it."""

    name: str
    path: str
    by_filter: bool
    spans: sites.Spans


class Made(Record):
    command: Command
    attach: str  # "name" or "address"
    points: tuple[str, ...]
    where: str  # the name or number in the command (Site.describe)
    why_unsafe: str
    bound: str  # what the program admits (binding.statement)
    path: str


def probes(loaded: Loaded, symbols: Sequence[Symbol], ctx: Context, request: Request) -> list[Probe]:
    index = emit.NameIndex(loaded.info.symbols)
    elf_file = open_elf(loaded.binary.host_path)
    # What bpftrace sees in the file depends on the path it is given (sites.bcc_visible).
    forms = [Form(f, p, bf, sites.bcc_visible(loaded.info, p)) for f, p, bf in path_forms(loaded, ctx)]
    scope = binding.scope_of(loaded.process, request.target, ctx.proc_root, runtime=request.runtime)
    out = []
    for sym in symbols:
        made = [_command(loaded, elf_file, sym, index, form, request, scope) for form in forms]
        usable = [m for m in made if isinstance(m, Made)]
        if not usable:
            refusal = next((m for m in made if isinstance(m, NotTraceable)), None)
            if refusal is not None:
                raise refusal
            loaded.warnings.append(f"{sym.name!r} can be named neither by name nor by address; skipped")
            continue
        first = usable[0]
        shown = loaded.info.demangled.get(sym.name)
        cmds = tuple(m.command for m in usable)
        perf = _perf(loaded, sym, ctx, elf_file) if request.tool == "perf" else ()
        out.append(
            Probe(
                sym.name,
                sym.address,
                cmds,
                first.attach,
                shown,
                request.probe,
                first.points,
                bool(first.why_unsafe),
                perf,
                first.where,
                first.why_unsafe,
                first.bound,
                first.path,
            )
        )
    return out


def _perf(loaded: Loaded, sym: Symbol, ctx: Context, elf_file: ElfFile) -> tuple[Command, ...]:
    """perf probe canonicalises the path it is given, so /proc/PID/root would lead it to the
    host's file of that name: give it a real host path (MergedDir, or the process's own path
    when it shares ctrace's mount namespace)."""
    b = loaded.binary
    path = b.merged_path or (b.path if own_mount_ns(loaded.process.pid, ctx) and not b.deleted else None)
    if path is None:
        loaded.warnings.append(f"no host path perf can use for {b.path} (no MergedDir); use the bpftrace commands")
        return ()
    offset = elf_file.vaddr_to_offset(sym.address)
    if offset is None:
        return ()
    return emit.perf_commands(loaded.process.pid, path, sym.name, offset)


def _command(
    loaded: Loaded,
    elf_file: ElfFile,
    sym: Symbol,
    index: emit.NameIndex,
    form: Form,
    request: Request,
    scope: binding.Scope,
) -> Made | NotTraceable | None:
    """One path form's command and how it attaches; a refusal is returned, not raised,
    so that another form may still work. None when the path cannot be quoted."""
    literal = emit.quote_path(form.path)
    if literal is None:
        return None
    row = actions.ACTIONS[request.action]
    try:
        where = _sites(loaded, elf_file, sym, index, form.spans, request.probe, request.dialect)
        exits, exit_kind = _exits(loaded, elf_file, sym, index, form.spans, request.dialect) if row.exits else ([], "")
    except NotTraceable as err:
        return err
    if not where or (row.exits and not exits):
        return None
    bpf_kind = "uretprobe" if request.probe == "uretprobe" else "uprobe"
    pid = loaded.process.pid
    # -p only where the path needs it: the path inside the process's mount namespace.
    bound = binding.bind([scope], request.dialect, pid if form.name == "pid-path" else None)
    block = actions.Block(
        tuple(emit.points(literal, where, bpf_kind)),
        bound.predicate,
        emit.label(loaded.info.demangled.get(sym.name) or sym.name),
        loaded.info.language,
        request.probe,
        request.dialect,
        tuple(emit.points(literal, exits, exit_kind)) if exits else (),
        exit_kind,
    )
    why = next((s.unsafe for s in [*where, *exits] if s.unsafe), "")
    text = request.dialect.configured(binding.program(bound, row.program(block)))
    cmd = emit.command(form.name, pid, text, bool(why), bound.pid_option is not None, request.dialect.program)
    attach = "name" if where[0].kind.startswith("name") else "address"
    return Made(cmd, attach, block.points, emit.describe(where), why, bound.statement, form.path)


def _exits(
    loaded: Loaded, elf_file: ElfFile, sym: Symbol, index: emit.NameIndex, spans: sites.Spans, dialect: Dialect
) -> tuple[list[emit.Site], str]:
    """Where a call returns: a uretprobe, but for Go (stacks move) a uprobe on each RET."""
    if loaded.info.language == "go":
        return sites.return_sites(sym, elf_file, spans, loaded.binary.path, index, dialect), "uprobe"
    return _sites(loaded, elf_file, sym, index, spans, "uprobe", dialect), "uretprobe"


def _sites(
    loaded: Loaded,
    elf_file: ElfFile,
    sym: Symbol,
    index: emit.NameIndex,
    spans: sites.Spans,
    probe: str,
    dialect: Dialect,
) -> list[emit.Site]:
    if probe == "return":
        return sites.return_sites(sym, elf_file, spans, loaded.binary.path, index, dialect)
    where = sites.entry_site(sym, elf_file, spans, index, dialect)
    return [where] if where is not None else []


class Plan(Record):
    targets: list[Target]
    remote: list[Remote]


def combined(result: Plan, request: Request, ctx: Context) -> Command:
    """One stack program for every probe of every target (``--run --all``): each file and
    site attached once however many PIDs run it, bound to all the targets' scopes."""
    procs = [t.process for t in result.targets]
    whole = binding.named_containers(request.target, request.runtime, procs)
    bound = binding.bind(binding.scopes(procs, whole, ctx.proc_root), request.dialect)
    parts = [binding.Part(t.process.pid, p.path, p.points, p.unsafe) for t in result.targets for p in t.probes]
    block = actions.Block(tuple(binding.distinct(parts)), bound.predicate, "", "")
    text = request.dialect.configured(
        binding.program(
            bound, actions.stack(block) if request.action == "stack" else _per_function(parts, result, block)
        )
    )
    return emit.command("combined", 0, text, any(p.unsafe for p in parts), False, request.dialect.program)


def _per_function(parts: Sequence[binding.Part], result: Plan, block: actions.Block) -> str:
    """--action stacks: one block per function, each keyed by its own label, over the distinct points."""
    kept = set(block.points)
    probes = [p for t in result.targets for p in t.probes]
    out = []
    for part, p in zip(parts, probes):
        points = tuple(x for x in part.points if x in kept)
        kept.difference_update(points)
        if points:
            label = emit.label(p.demangled or p.symbol)
            out.append(actions.stacks(block._replace(points=points, label=label, probe=p.probe)))
    return " ".join(out)


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
    loaded = _load_all(procs, ctx, cache, request.lib)
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
            found = probes(item, chosen, ctx, request)
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
    from ctrace import framepointers

    info, pid = item.info, item.process.pid
    return framepointers.target_warnings(item.binary.host_path, info.language, info.symbols, pid, ctx.proc_root)


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
