"""One bpftrace program for every probe of every target: ``--run`` on a container of
several processes, and ``--run --all`` (issue 22).

Each (file, function) is attached once however many PIDs run the file, through the path
of a process that lives as long as its container (its init, when it is a target): a
uprobe fires in every process that maps the file, so a second attachment would count
each event twice, and a worker's /proc/PID/root may be gone by the time bpftrace opens
it (a prefork server's workers live a fraction of a second). The binding admits every
target's scope; over several containers each event names its own (binding.owner).
"""

from __future__ import annotations

from collections.abc import Sequence

from ctrace.bpftrace import actions, binding, emit
from ctrace.errors import NotFound
from ctrace.model import Command, Probe, Target
from ctrace.plan.probes import check_stacks
from ctrace.plan.request import Plan, Request
from ctrace.record import Record
from ctrace.resolvers import Context


class Unit(Record):
    """One function in one file, and the target whose path opens it."""

    target: Target
    probe: Probe


def one_container(result: Plan, request: Request) -> bool:
    """Whether every target is a process of the one container (or pod) the target names
    as a whole: one program, bound by its mount namespace, with no --all."""
    procs = [t.process for t in result.targets]
    whole = binding.named_containers(request.target, request.runtime, procs)
    return len(whole) == 1 and all(p.container is not None and p.container.id == whole[0] for p in procs)


def units(targets: Sequence[Target]) -> list[Unit]:
    """Each (file, function) once, the init's path first; a path that no longer opens
    (its process exited since it was resolved) is left out."""
    seen: set[tuple[object, str, int]] = set()
    out = []
    for t in sorted(targets, key=lambda t: not t.process.init):  # stable: the others keep their order
        for p in t.probes:
            key = binding.file_key(p.path)
            # By address too: two functions of one name (static C, C++'s anonymous namespaces) are two.
            if key is None or (key, p.symbol, p.address) in seen:
                continue
            seen.add((key, p.symbol, p.address))
            out.append(Unit(t, p))
    return out


def binding_of(result: Plan, request: Request, ctx: Context) -> binding.Binding:
    """The binding of the one program: every target's container (named as a whole) or process."""
    procs = [t.process for t in result.targets]
    whole = binding.named_containers(request.target, request.runtime, procs)
    return binding.bind(binding.scopes(procs, whole, ctx.proc_root), request.dialect)


def command(result: Plan, request: Request, ctx: Context) -> Command:
    bound = binding_of(result, request, ctx)
    chosen = units(result.targets)
    if not chosen:
        raise NotFound("every process of the target exited before bpftrace started", "run it again")
    check_stacks(request, [t.process for t in result.targets])
    row = actions.ACTIONS[request.action]
    base = actions.Block(
        (), bound.predicate, "", "", dialect=request.dialect, owner=bound.owner, pid=bound.pid, tid=bound.tid
    )
    if row.combines == actions.WHOLE:  # one block over every point, each event headed by its PID
        text = row.program(base._replace(points=tuple(p for u in chosen for p in u.probe.points)))
    else:
        text = " ".join(_block(u, base, row, i if len(chosen) > 1 else None) for i, u in enumerate(chosen, 1))
    program = request.dialect.configured(binding.program(bound, text))
    unsafe = any(u.probe.unsafe for u in chosen)
    return emit.command("combined", 0, program, unsafe, False, request.dialect.program)


def _block(unit: Unit, base: actions.Block, row: actions.Action, slot: int | None) -> str:
    """The action's program for one function, keyed by its own label; latency gets an entry
    map of its own (a nested call would overwrite the caller's entry time in a shared one)."""
    p = unit.probe
    block = base._replace(
        points=p.points,
        label=emit.label(p.demangled or p.symbol),
        language=unit.target.binary.language,
        probe=p.probe,
        exits=p.exits,
        exit_kind=p.exit_kind or "uretprobe",
        start=f"@start{slot}" if slot is not None else "@start",
    )
    return row.program(block)
