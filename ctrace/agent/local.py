"""``ctrace target ... --run -o json``: the chosen bpftrace run, its output as protocol lines.

The same lines the agent relays (PROTOCOL.md's "started", "event", "aggregate",
"end"); the agent runs exactly this as its child process and adds the node. The
run goes through run/'s own pieces (runner's start, wait and spill, stacks' naming,
watch's watcher), with bpftrace's stdout and stderr read line by line.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Sequence

from ctrace.agent.stream import Labels, Stream, labels_of
from ctrace.errors import NotFound, UsageError
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import IO, TextIO

    from ctrace.model import Command, Process, Target
    from ctrace.plan.request import Plan, Request
    from ctrace.resolvers import Context


def run(result: Plan, request: Request, ctx: Context, out: TextIO) -> int:
    """``--run -o json`` of ctrace's own programs: watch.trace's run, its output as lines."""
    from ctrace.bpftrace import actions
    from ctrace.run import watch

    for t in result.targets:  # as watch.trace says them: what makes the output short
        for w in t.warnings:
            sys.stderr.write(f"ctrace: warning: pid {t.process.pid}: {w}\n")
    if request.tool == "perf":
        raise UsageError("--run -o json runs bpftrace, not perf", "drop --tool perf")
    chosen = watch.chosen_command(result, request, ctx)
    if chosen.form == "agent":
        raise UsageError(
            "--run -o json runs on this node, and the pod runs on another",
            "kubectl ctrace runs it through that node's agent",
        )
    stream = make_stream(result, request.action, out, watch.combined_statement(chosen, result, request, ctx))
    if actions.ACTIONS[request.action].named:
        return _ended(
            stream,
            lambda: watch.run_traced(result, request, ctx.proc_root, _stacks(result, request, ctx, chosen, stream)),
        )

    def start() -> int:
        code = piped(chosen.argv, request.duration, stream)
        stream.finish()
        return code

    return _ended(stream, lambda: watch.run_traced(result, request, ctx.proc_root, start))


def _ended(stream: Stream, run: Callable[[], int]) -> int:
    """The run, then its "end" (code 1 and the word when the traced process went away)."""
    try:
        code = run()
    except NotFound as err:
        stream.end(1, err.message)
        raise
    stream.end(code)
    return code


def piped(argv: Sequence[str], duration: float | None, stream: Stream) -> int:
    """bpftrace run as runner.run runs it, each line of its stdout and stderr read as it comes
    (bpftrace 0.27 says "Attached N probes" on stderr)."""
    from ctrace.run import runner

    with runner.spilled(argv) as short:
        proc = runner.start(short, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        readers = [_feed(proc.stdout, stream.line), _feed(proc.stderr, stream.error_line)]
        code = runner.wait(proc, duration)
    for reader in readers:
        reader.join(timeout=runner.GRACE)
    return code


def _feed(pipe: IO[str] | None, line: Callable[[str], None]) -> threading.Thread:
    def read() -> None:
        assert pipe is not None
        for raw in pipe:
            line(raw)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def _stacks(result: Plan, request: Request, ctx: Context, chosen: Command, stream: Stream) -> Callable[[], int]:
    """The stacks action as run/stacks.py runs it, its named stacks one aggregate."""
    from ctrace.run import runner, stacks, symbolize

    names = stacks.naming(result, request, ctx.proc_root)

    def start() -> int:
        for path in (names.folded, names.flamegraph):
            if path:
                stacks.check_writable(path)  # before the run, not after it
        maps = symbolize.Maps(names.proc_root)
        for pid in names.labels:
            maps.take(pid)
        with runner.spilled(chosen.argv) as short:
            proc = runner.start(short, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            watch = runner.Watch(proc, Lines(stream))  # type: ignore[arg-type]
            errors = _feed(proc.stderr, stream.error_line)
            code = runner.wait(proc, request.duration)
        errors.join(timeout=runner.GRACE)
        found = stacks.named(stacks.parse_stacks(watch.join()), maps, names)
        stream.finish(found)
        stacks.write(found, names, sys.stderr)  # --folded, --flamegraph: their "written to" lines
        return code

    return start


class Lines:
    """A text stream whose lines go to ``Stream.line`` (runner.Watch writes bpftrace's lines to one)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.stream.line(line)
        return len(text)

    def flush(self) -> None:
        """Each line is written as it comes."""


def make_stream(result: Plan, action: str | None, out: TextIO, statement: str | None = None) -> Stream:
    """A stream labelled with each target's pod or container, its legend as "started" says it
    (``statement``: what the one program over several probes admits, watch.combined_statement)."""
    from ctrace.bpftrace import binding
    from ctrace.bpftrace.emit import label

    procs = [t.process for t in result.targets]
    labels: dict[int, Labels] = {p.pid: labels_of(p) for p in procs}
    functions = {label(p.demangled or p.symbol): p.demangled or p.symbol for t in result.targets for p in t.probes}
    said = [statement] if statement else [p.bound for t in result.targets for p in t.probes if p.bound]
    return Stream(out, action, functions, labels, binding.legend(procs) + list(dict.fromkeys(said)))


def run_program(request: Request, run: bool, ctx: Context, out: TextIO) -> int:
    """``-e PROGRAM``: the user's program on the target (program.py), printed, or run with --run."""
    from ctrace.bpftrace import binding
    from ctrace.plan.request import Plan
    from ctrace.run import runner, watch

    targets, command, statement = program_command(request, ctx)
    procs = [t.process for t in targets]
    result = Plan(targets, [])
    if not run:
        out.write(command.shell + "\n")
        return 0
    legend = [*binding.legend(procs), statement]
    if request.output == "json":
        stream = Stream(out, None, {}, {p.pid: labels_of(p) for p in procs}, legend)
        return _ended(
            stream,
            lambda: watch.run_traced(
                result, request, ctx.proc_root, lambda: piped(command.argv, request.duration, stream)
            ),
        )
    for line in legend:
        sys.stderr.write(f"ctrace: {line}\n")
    return watch.run_traced(result, request, ctx.proc_root, lambda: runner.run(command.argv, request.duration))


def program_command(request: Request, ctx: Context) -> tuple[list[Target], Command, str]:
    """The target's processes and binary, the bound program's command, and what it is bound to."""
    from ctrace.agent import program
    from ctrace.bpftrace import binding, emit
    from ctrace.model import Target
    from ctrace.plan import targets
    from ctrace.plan.locate import ElfCache, load, path_forms

    assert request.program is not None
    procs = [p for p in targets.processes(request.target, ctx, request.runtime) if not p.remote]
    if not procs:
        raise UsageError("the target runs on another node", "kubectl ctrace runs it through that node's agent")
    if len({p.exe for p in procs}) > 1:
        pids = ", ".join(str(p.pid) for p in procs[:8])
        raise UsageError(f"the target's processes run different binaries ({pids}): $path names one", "pick one: pid:N")
    loaded = load(procs[0], ctx, ElfCache(ctx.cache_dir), request.lib)
    literal = emit.quote_path(path_forms(loaded, ctx)[0][1])
    if literal is None:
        raise UsageError(f"{loaded.binary.host_path} cannot stand in a bpftrace attach point", "pick another target")
    text = program.substituted(request.program, program.Values(literal, procs[0].pid, _container_pid(procs)))
    d = request.dialect
    whole = binding.named_containers(request.target, request.runtime, procs)
    bound = binding.bind(binding.scopes(procs, whole, ctx.proc_root), d)
    probes, begin, end = program.bound(text, bound.predicate)
    full = d.configured(binding.program(bound, probes, begin, end))
    command = emit.command("program", procs[0].pid, full, False, False, d.program)
    return [Target(p, loaded.binary) for p in procs], command, bound.statement


def _container_pid(procs: list[Process]) -> int:
    """kubectl-trace's $container_pid: the host PID of the container's first process."""
    first = next((p.pid for p in procs if p.init), None)
    container = procs[0].container
    return first or (container.init_pid if container is not None and container.init_pid else None) or procs[0].pid
