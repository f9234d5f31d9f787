"""From matched functions to probes: each path form's command (plan/combined.py makes one
program of several).

The choice of site (name or address) is bpftrace/sites.py's; the program text is the
action's row (bpftrace/actions.py), bound by bpftrace/binding.py and quoted by emit.
"""

from __future__ import annotations

from collections.abc import Sequence

from ctrace.bpftrace import actions, binding, emit, sites
from ctrace.bpftrace.sites import NameIndex, Site
from ctrace.elf.reader import ElfFile, open_elf
from ctrace.errors import EnvironmentProblem, NotTraceable
from ctrace.model import Command, Probe, Process, Symbol
from ctrace.plan.locate import Loaded, own_mount_ns, path_forms
from ctrace.plan.request import Request
from ctrace.record import Record
from ctrace.resolvers import Context


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
    exits: tuple[str, ...] = ()  # latency: where the call returns
    exit_kind: str = ""


class Subject(Record):
    """One loaded binary of one process, and what was asked of it: what every function's commands share."""

    loaded: Loaded
    elf_file: ElfFile
    name_index: NameIndex
    request: Request
    scope: binding.Scope


def check_stacks(request: Request, procs: Sequence[Process]) -> list[str]:
    """From ctrace's child PID namespace: refuse a stack action this bpftrace cannot run, and
    warn where bpftrace would name the frames itself (bpftrace/pidns.py)."""
    d, row = request.dialect, actions.ACTIONS[request.action]
    if d.pidns is None or not row.ustack:
        return []
    deeper = [p.pid for p in procs if len(p.nspid) > 1]
    if d.ns_pid_helper and deeper:
        raise EnvironmentProblem(
            f"bpftrace {d.name} cannot read the user stacks of PID {deeper[0]} from ctrace's child PID namespace: "
            "its ustack fails with get_ns_current_pid_tgid -22 for a process of a deeper namespace "
            "(bpftrace issue 4384)",
            "use a bpftrace 0.17 (--bpftrace PATH), or --action count, args or latency, "
            "or run ctrace in the host's PID namespace",
        )
    if row.named or d.ns_pid_helper:
        return []
    return [
        f"bpftrace {d.name} names the frames it prints from /proc/PID of the init namespace's PID, which in "
        "ctrace's child PID namespace is another process or none: add --run, and ctrace names them"
    ]


def probes(
    loaded: Loaded, symbols: Sequence[Symbol], ctx: Context, request: Request, scope: binding.Scope | None = None
) -> list[Probe]:
    """Each function's probe; ``scope``: the whole container the process is in, when the
    target names it (binding.whole_containers), else the process's own."""
    loaded.warnings.extend(check_stacks(request, [loaded.process]))
    elf_file = open_elf(loaded.binary.host_path)
    # What bpftrace sees in the file depends on the path it is given (sites.bcc_visible).
    forms = [Form(f, p, bf, sites.bcc_visible(loaded.info, p)) for f, p, bf in path_forms(loaded, ctx)]
    scope = scope or binding.scope_of(loaded.process, request.target, ctx.proc_root, runtime=request.runtime)
    subject = Subject(loaded, elf_file, NameIndex(loaded.info.symbols), request, scope)
    out = []
    left_out: list[NotTraceable] = []
    for sym in symbols:
        made = [_command(subject, sym, form) for form in forms]
        usable = [m for m in made if isinstance(m, Made)]
        if not usable:
            refusal = next((m for m in made if isinstance(m, NotTraceable)), None)
            if isinstance(refusal, sites.SharedName):
                left_out.append(refusal)  # the others the pattern matched may still be traced
                continue
            if refusal is not None:
                raise refusal
            loaded.warnings.append(f"{sym.name!r} can be named neither by name nor by address; skipped")
            continue
        perf = _perf(loaded, sym, ctx, elf_file) if request.tool == "perf" else ()
        out.append(_probe(sym, usable, loaded.info.demangled.get(sym.name), request.probe, perf))
    if left_out and not out:
        raise left_out[0]
    loaded.warnings.extend(f"{r.message}; left out ({r.hint})" for r in left_out)
    return out


def _probe(sym: Symbol, usable: Sequence[Made], shown: str | None, probe: str, perf: tuple[Command, ...]) -> Probe:
    """The function's probe: every usable form's command, the first (recommended) one described."""
    first = usable[0]
    return Probe(
        symbol=sym.name,
        address=sym.address,
        commands=tuple(m.command for m in usable),
        attach=first.attach,
        demangled=shown,
        probe=probe,
        points=first.points,
        unsafe=bool(first.why_unsafe),
        perf=perf,
        where=first.where,
        why_unsafe=first.why_unsafe,
        bound=first.bound,
        path=first.path,
        exits=first.exits,
        exit_kind=first.exit_kind,
    )


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


def _command(subject: Subject, sym: Symbol, form: Form) -> Made | NotTraceable | None:
    """One path form's command and how it attaches; a refusal is returned, not raised,
    so that another form may still work. None when the path cannot be quoted."""
    literal = emit.quote_path(form.path)
    if literal is None:
        return None
    loaded, request = subject.loaded, subject.request
    if form.name == "pid-path" and request.dialect.pidns is not None and request.dialect.ns_pid_helper:
        return None  # -p's filter fails for a deeper namespace's task here (dialect.ns_pid_helper)
    row = actions.ACTIONS[request.action]
    try:
        where = _sites(subject, sym, form.spans, request.probe)
        exits, exit_kind = _exits(subject, sym, form.spans) if row.exits else ([], "")
    except NotTraceable as err:
        return err
    if not where or (row.exits and not exits):
        return None
    bpf_kind = "uretprobe" if request.probe == "uretprobe" else "uprobe"
    pid = loaded.process.pid
    # -p only where the path needs it: the path inside the process's mount namespace.
    bound = binding.bind([subject.scope], request.dialect, pid if form.name == "pid-path" else None)
    block = actions.Block(
        points=tuple(sites.points(literal, where, bpf_kind)),
        bind=bound.predicate,
        label=emit.label(loaded.info.demangled.get(sym.name) or sym.name),
        language=loaded.info.language,
        probe=request.probe,
        dialect=request.dialect,
        exits=tuple(sites.points(literal, exits, exit_kind)) if exits else (),
        exit_kind=exit_kind,
        pid=bound.pid,
        tid=bound.tid,
    )
    why = next((s.unsafe for s in [*where, *exits] if s.unsafe), "")
    text = request.dialect.configured(binding.program(bound, row.program(block)))
    cmd = emit.command(form.name, pid, text, bool(why), bound.pid_option is not None, request.dialect.program)
    attach = "name" if where[0].kind.startswith("name") else "address"
    described = sites.describe(where)
    return Made(cmd, attach, block.points, described, why, bound.statement, form.path, block.exits, exit_kind)


def _exits(subject: Subject, sym: Symbol, spans: sites.Spans) -> tuple[list[Site], str]:
    """Where a call returns: a uretprobe, but for Go (stacks move) a uprobe on each RET."""
    if subject.loaded.info.language == "go":
        return _sites(subject, sym, spans, "return"), "uprobe"
    return _sites(subject, sym, spans, "uprobe"), "uretprobe"


def _sites(subject: Subject, sym: Symbol, spans: sites.Spans, probe: str) -> list[Site]:
    dialect, path = subject.request.dialect, subject.loaded.binary.path
    if probe == "return":
        return sites.return_sites(sym, subject.elf_file, spans, path, subject.name_index, dialect)
    where = sites.entry_site(sym, subject.elf_file, spans, subject.name_index, dialect, path)
    return [where] if where is not None else []
