"""The ``stacks`` action's output named by ctrace: bpftrace's map dump parsed (Stack),
labelled (Naming, from the request and the plan), and printed as the top stacks, folded
stacks and a flame graph.

With ``run_stacks`` ctrace reads what bpftrace prints: the kernel counted each (probe,
PID, stack) and bpftrace prints the raw addresses (``ustack(perf)`` starts every frame
with its address on 0.17, 0.23 and 0.27 alike), which ctrace names from the mappings
it took at attach.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence

from ctrace.errors import EnvironmentProblem
from ctrace.proc import procfs
from ctrace.record import TYPE_CHECKING, Record
from ctrace.run import runner, symbolize

if TYPE_CHECKING:
    from typing import TextIO

    from ctrace.model import Process
    from ctrace.plan.request import Plan, Request


class Stack(Record):
    probe: str
    pid: int
    addresses: tuple[int, ...]  # leaf first, as bpftrace prints them
    calls: int


# [0-9]{1,20}: a u64 at most (int() refuses over 4300 digits, and \d takes any script's digits)
_KEY = re.compile(r"@stacks\[(?P<probe>.*), (?P<pid>[0-9]{1,20}), (?P<caller>[0-9]{1,20}), \Z")

_END = re.compile(r"\]: ([0-9]{1,20})\Z")


def parse_stacks(lines: Sequence[str]) -> list[Stack]:
    """The ``@stacks[probe, pid, ustack(perf)]`` entries of bpftrace's map dump."""
    out = []
    key: re.Match[str] | None = None
    frames: list[int] = []
    for line in lines:
        if key is None:
            key = _KEY.match(line)
            frames = []
        elif end := _END.match(line):
            caller = int(key["caller"])
            if caller and frames and frames[1:2] != [caller]:  # emit.STACKS_ENTRY: the caller the walk skipped
                frames[1:1] = [caller]
            out.append(Stack(key["probe"], int(key["pid"]), tuple(frames), int(end[1])))
            key = None
        elif line.startswith("\t") and line.split():
            try:
                frames.append(int(line.split()[0], 16))
            except ValueError:
                pass
    return out


class Naming(Record):
    """What the named stacks are labelled with and written to."""

    labels: Mapping[int, str]  # PID -> "comm (container web-1)", for the PIDs ctrace attached to
    functions: Mapping[str, str]  # attach point -> the function's readable name
    title: str
    folded: str | None = None
    flamegraph: str | None = None
    proc_root: str = "/proc"  # --proc-root: the host's /proc as the node agent mounts it


def naming(result: Plan, request: Request, proc_root: str) -> Naming:
    """Labels for the named stacks: each PID's process and container, each attach point's function."""
    labels = {t.process.pid: _label(t.process) for t in result.targets}
    from ctrace.bpftrace.emit import label

    # The program keys each function by its short label (emit.label): the label back to the name.
    functions = {label(p.demangled or p.symbol): p.demangled or p.symbol for t in result.targets for p in t.probes}
    funcs = sorted({p.demangled or p.symbol for t in result.targets for p in t.probes})
    comms = sorted({t.process.comm for t in result.targets})
    shown = ", ".join(funcs[:3]) + (f" and {len(funcs) - 3} more" if len(funcs) > 3 else "")
    pids = ", ".join(str(pid) for pid in sorted(labels)[:5]) + (", ..." if len(labels) > 5 else "")
    title = f"ctrace: stacks of {shown} in {', '.join(comms)} (PID {pids})"
    return Naming(labels, functions, title, request.folded, request.flamegraph, proc_root)


def _label(p: Process) -> str:
    if p.pod is not None:
        return f"{p.comm}, pod {p.pod.namespace}/{p.pod.name}, container {p.pod.container}"
    if p.container is not None:
        return f"{p.comm}, {p.container.runtime} container {p.container.name}"
    return f"{p.comm}, host"


def run_stacks(argv: Sequence[str], duration: float | None, naming: Naming, out: TextIO | None = None) -> int:
    """Run the aggregated-stacks program, then print its stacks named by ctrace."""
    out = out or sys.stdout
    for path in (naming.folded, naming.flamegraph):
        if path:
            check_writable(path)  # before the run, not after it
    maps = symbolize.Maps(naming.proc_root)
    for pid in naming.labels:
        maps.take(pid)
    with runner.spilled(argv) as short:
        proc = runner.start(short, stdout=subprocess.PIPE)
        watch = runner.Watch(proc, out)
        code = runner.wait(proc, duration)
    found = named(parse_stacks(watch.join()), maps, naming)
    if not found and code not in (0, 130):
        return code  # bpftrace failed (its error is on stderr): not "no stacks were recorded"
    report(found, naming, maps, out)
    write(found, naming, out)
    return code


class Named(Record):
    stack: Stack
    frames: tuple[symbolize.Frame, ...]  # leaf first
    names: tuple[str, ...]  # leaf first: function (demangled) or [file+0xOFFSET]
    root: str  # the folded stack's first frame: "comm-PID", as stackcollapse-perf.pl --pid


def named(stacks: Sequence[Stack], maps: symbolize.Maps, naming: Naming) -> list[Named]:
    """Every stack's frames named; demangled names are looked up once, for the frames seen."""
    found = [(s, symbolize.frames(maps, s.pid, s.addresses)) for s in stacks]
    readable = symbolize.demangled(f.function for _, fs in found for f in fs if f.function)
    merged: dict[tuple[str, int, tuple[str, ...]], Named] = {}
    for stack, frames in found:
        names = tuple(symbolize.label(f, readable) for f in frames)
        key = (stack.probe, stack.pid, names)
        if key in merged:  # one function, different return addresses in it: one stack to a reader
            stack = stack._replace(calls=stack.calls + merged[key].stack.calls)
        merged[key] = Named(stack, tuple(frames), names, f"{_comm(stack.pid, naming, maps)}-{stack.pid}")
    return sorted(merged.values(), key=lambda n: (-n.stack.calls, n.root, n.names))


def _comm(pid: int, naming: Naming, maps: symbolize.Maps) -> str:
    for p in (pid, *maps.ancestors(pid)):
        if p in naming.labels:
            return naming.labels[p].split(",", 1)[0]
    return procfs.read_comm(pid, maps.proc_root) or "pid"


def counts(stacks: Sequence[Named]) -> dict[tuple[str, ...], int]:
    """Root-first stacks for flame.fold and flame.svg, with the process as the root frame."""
    out: dict[tuple[str, ...], int] = {}
    for n in stacks:
        key = (n.root, *reversed(n.names))
        out[key] = out.get(key, 0) + n.stack.calls
    return out


def _where(pid: int, naming: Naming, maps: symbolize.Maps) -> str:
    if pid in naming.labels:
        return naming.labels[pid]
    for p in maps.ancestors(pid):
        if p in naming.labels:
            return f"exited; forked from the process of PID {p}, {naming.labels[p]}"
    return "a process ctrace did not attach to"


def report(stacks: Sequence[Named], naming: Naming, maps: symbolize.Maps, out: TextIO) -> None:
    total = sum(n.stack.calls for n in stacks)
    if not stacks:
        out.write("ctrace: no stacks were recorded (the function was not called while the probe was attached)\n")
        return
    shown = stacks[:TOP]
    out.write(f"ctrace: {total} calls in {len(stacks)} distinct stacks; the top {len(shown)}, named by ctrace:\n")
    for n in shown:
        func = printable(naming.functions.get(n.stack.probe) or (n.names[0] if n.names else n.stack.probe))
        out.write(f"\n{n.stack.calls:>8}  {func}  PID {n.stack.pid} ({_where(n.stack.pid, naming, maps)})\n")
        for f, name in zip(n.frames, n.names):
            where = f"  ({printable(os.path.basename(f.path))})" if f.path and f.function else ""
            offset = f"+0x{f.offset:x}" if f.function else ""
            out.write(f"          {printable(name)}{offset}{where}\n")


def printable(text: str) -> str:
    """A name from a traced binary as terminal text: control characters (an escape sequence
    in a hostile symbol name) shown as \\xNN, not sent to the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


TOP = 10  # stacks printed; --folded and --flamegraph keep them all


def write(stacks: Sequence[Named], naming: Naming, out: TextIO) -> None:
    from ctrace.run import flame

    if naming.folded:
        _save(naming.folded, flame.fold(counts(stacks)))
        out.write(f"ctrace: folded stacks written to {naming.folded}\n")
    if naming.flamegraph:
        _save(naming.flamegraph, flame.svg(counts(stacks), naming.title))
        out.write(f"ctrace: flame graph written to {naming.flamegraph}\n")


def check_writable(path: str) -> None:
    _save(path, "", "a")


def _save(path: str, text: str, mode: str = "w") -> None:
    try:
        with open(path, mode, encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
    except OSError as err:
        raise EnvironmentProblem(f"cannot write {path}: {err.strerror}", "give a writable path") from err
