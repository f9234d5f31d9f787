"""Aggregated stacks named by ctrace: the top stacks as text, folded stacks, a flame graph."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ctrace import symbolize
from ctrace.errors import EnvironmentProblem
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import TextIO

    from ctrace.runner import Naming, Stack


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
    try:
        with open(f"{maps.proc_root}/{pid}/comm") as f:
            return f.read().strip() or "pid"
    except OSError:
        return "pid"


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
    from ctrace import flame

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
