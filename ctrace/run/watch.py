"""``--run``: the chosen command started, watched while it runs, and its stacks named.

What the request asked (``Request``: --all, --duration, --folded, --flamegraph, the
command line for hints) comes down whole from the command; nothing here reads argparse.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable

from ctrace.errors import NotFound, UsageError
from ctrace.proc import procfs
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TextIO

    from ctrace.model import Command, Process
    from ctrace.plan.request import Plan, Request
    from ctrace.resolvers import Context


def trace(result: Plan, request: Request, ctx: Context, out: TextIO) -> int:
    """--run: bpftrace (or perf) started on the chosen command, watched (run_traced)."""
    _warn_before_run(result)
    if request.tool == "perf":
        from ctrace.run import perf

        return perf.run(result, request.duration, out, ctx.proc_root, request.folded, request.flamegraph)
    from ctrace.bpftrace import actions
    from ctrace.run import runner

    chosen = chosen_command(result, request, ctx)
    if chosen.form == "agent":  # the agent's ctrace names the stacks on that node and prints them
        if request.folded or request.flamegraph:
            raise UsageError(
                "--folded and --flamegraph are written on this node only",
                "run the printed kubectl exec command with --folded FILE: the file is written in the agent",
            )
        return runner.run(chosen.argv, request.duration)
    legend(result, sys.stderr, combined_statement(chosen, result, request, ctx))  # beside ctrace's warnings
    if actions.ACTIONS[request.action].named:
        from ctrace.run import stacks

        names = stacks.naming(result, request, ctx.proc_root)
        return run_traced(
            result, request, ctx.proc_root, lambda: stacks.run_stacks(chosen.argv, request.duration, names, out)
        )
    return run_traced(result, request, ctx.proc_root, lambda: runner.run(chosen.argv, request.duration))


def _warn_before_run(result: Plan) -> None:
    """--run prints no plan, but what makes its output short (no frame pointers) is said first."""
    for t in result.targets:
        for w in t.warnings:
            sys.stderr.write(f"ctrace: warning: pid {t.process.pid}: {w}\n")


def run_traced(result: Plan, request: Request, proc_root: str, start: Callable[[], int]) -> int:
    """--run, watched: when every traced process has exited (or been replaced by a restart),
    bpftrace is stopped as Ctrl-C would stop it and the run ends with exit 1 and a word.
    A program bound by a PID predicate would otherwise run on, printing nothing, forever;
    one run with -p would end with status 0, which reads as "it never fired"."""
    import signal
    import threading

    started = {p.pid: procfs.start_time(p.pid, proc_root) for p in watched(result, request)}
    done = threading.Event()

    def gone() -> list[int]:
        return [pid for pid, when in started.items() if when is None or procfs.start_time(pid, proc_root) != when]

    def watch() -> None:
        while not done.wait(0.5):
            if started and len(gone()) == len(started) and not done.is_set():
                os.kill(os.getpid(), signal.SIGINT)  # runner stops bpftrace as on Ctrl-C
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        code = start()  # runs bpftrace until it ends, Ctrl-C, --duration or the watcher's SIGINT
    finally:
        done.set()
    left = gone()
    if left and code in (0, 130):
        comm = next(t.process.comm for t in result.targets if t.process.pid == left[0])
        if request.target.startswith("pid:") or request.target.isdigit():
            hint = f"if it was restarted, find its new PID: '{shlex.join(['ctrace', 'ps', comm])}'"
        else:
            hint = f"if it was restarted, trace it again: '{shlex.join(['ctrace', *request.argv])}'"
        if len(left) == len(started):
            raise NotFound(f"process {left[0]} ({comm}) exited while it was traced; bpftrace stopped", hint)
        sys.stderr.write(f"warning: process {', '.join(map(str, left))} exited while it was traced\n")
    return code


def watched(result: Plan, request: Request) -> list[Process]:
    """The processes whose end ends the run: each target, but of a container named as a
    whole only its init when that is a target (a worker that exits is the container's
    business: a prefork server replaces them all the time)."""
    from ctrace.bpftrace import binding

    procs = [t.process for t in result.targets]
    whole = set(binding.named_containers(request.target, request.runtime, procs))
    inits = {p.container.id for p in procs if p.init and p.container is not None and p.container.id in whole}
    return [p for p in procs if p.init or p.container is None or p.container.id not in inits]


def legend(result: Plan, out: TextIO, statement: str | None = None) -> None:
    """Before --run output (stdout is the trace's own): the container or pod of each PID,
    and what the program admits (``statement``: the one program's, else each probe's)."""
    from ctrace.bpftrace import binding

    for line in binding.legend([t.process for t in result.targets]):
        out.write(f"ctrace: {line}\n")
    said = [statement] if statement else [p.bound for t in result.targets for p in t.probes if p.bound]
    for text in dict.fromkeys(said):
        out.write(f"ctrace: {text}\n")
    out.flush()  # before bpftrace writes to the terminal


def combined_statement(chosen: Command, result: Plan, request: Request, ctx: Context) -> str | None:
    """What a program over several probes (plan/combined.py) admits."""
    if chosen.form != "combined":
        return None
    from ctrace.plan import combined

    return combined.binding_of(result, request, ctx).statement


def chosen_command(result: Plan, request: Request, ctx: Context) -> Command:
    """The single command --run starts: a probe's own, or one program for all of them
    (a container's processes, or --all)."""
    from ctrace.bpftrace import actions
    from ctrace.plan import combined

    probes = [(t.process.pid, p) for t in result.targets for p in t.probes]
    if result.remote:
        if len(result.remote) == 1 and not probes and result.remote[0].command is not None:
            return result.remote[0].command
        raise UsageError("--run cannot run pods on other nodes from here", "run the printed kubectl exec commands")
    if len(probes) == 1:
        return probes[0][1].commands[0]
    if not request.everything and len(result.targets) > 1 and not combined.one_container(result, request):
        raise UsageError(f"--run found {len(probes)} probes to run", "add --all to run them as one bpftrace program")
    if not actions.ACTIONS[request.action].combines:
        raise UsageError(f"--action {request.action} cannot run as one program", "run one target at a time")
    return combined.command(result, request, ctx)
