"""What a person reads: one block per target, the command to run at the left margin.

Commands start at column 0 so a triple-click copies exactly the command (and a
leading space would keep it out of bash's history under HISTCONTROL=ignorespace).
Colour only on a terminal, and never when NO_COLOR is set (no-color.org).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ctrace.model import Command, Process, Remote, Target
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TextIO

FORMS = {
    "proc-root": "/proc/PID/root (seed 2.5.2)",
    "merged": "MergedDir (seed 2.5.1)",
    "pid-path": "-p PID with the in-container path (seed 2.5.3)",
    "exe": "/proc/PID/exe",
    "agent": "through the node agent",
}


class Style:
    """ANSI styles, or nothing when the stream is not a colour terminal."""

    def __init__(self, out: TextIO) -> None:
        tty = getattr(out, "isatty", lambda: False)()
        self.on = tty and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def warn(self, text: str) -> str:
        return self._wrap("33", text)


def chain(nspid: Sequence[int]) -> str:
    return " -> ".join(str(n) for n in nspid)


def where(p: Process) -> str:
    if p.pod is not None:
        return f"pod {p.pod.namespace}/{p.pod.name} container {p.pod.container} on {p.pod.node or '?'}"
    if p.container is None:
        return "host process"
    c = p.container
    init = " (its init process)" if p.init else ""
    image = f", image {c.image}" if c.image else ""
    return f"{c.runtime} container {c.name or c.id[:12]} [{c.id[:12]}{image}]{init}"


def target(t: Target, out: TextIO, wide: bool, style: Style) -> None:
    p, b = t.process, t.binary
    out.write(style.bold(f"{p.comm}  pid {p.pid}") + f"  {where(p)}\n")
    out.write(f"  NSpid    {chain(p.nspid)}  (host -> innermost PID namespace)\n")
    state = "stripped" if b.stripped else "not stripped"
    out.write(f"  binary   {b.path}  ({b.language}, {state}, build-id {b.build_id or '-'})\n")
    out.write(f"  host     {b.host_path}\n")
    if b.merged_path:
        out.write(f"  merged   {b.merged_path}\n")
    for w in t.warnings:
        out.write(style.warn(f"  warning: {w}") + "\n")
    for probe in t.probes:
        how = "by name" if probe.attach == "name" else "by address"
        kind = "" if probe.probe == "uprobe" else f"{probe.probe}, "
        shown = f"{probe.demangled}  [{probe.symbol}]" if probe.demangled else probe.symbol
        at = probe.where or f"0x{probe.address:x}"  # the name or number in the command
        out.write("\n" + style.dim(f"# {shown}  ({kind}{at}, attached {how})") + "\n")
        if probe.why_unsafe:
            out.write(style.dim(f"# {probe.why_unsafe}") + "\n")
        if probe.bound:
            out.write(style.dim(f"# {probe.bound}") + "\n")
        commands(probe.commands, out, wide, style)
        if probe.perf:
            out.write(style.dim("# perf (seed 4.1.2): add the event, record it with DWARF stacks, show, remove") + "\n")
            out.write("".join(c.shell + "\n" for c in probe.perf))


def commands(cmds: Sequence[Command], out: TextIO, wide: bool, style: Style) -> None:
    out.write(cmds[0].shell + "\n")
    if not wide and len(cmds) > 1:
        others = ", ".join(c.form for c in cmds[1:])
        out.write(style.dim(f"# other path forms: {others} (-o wide shows them)") + "\n")
        return
    for cmd in cmds[1:]:
        out.write(style.dim(f"# or, {FORMS.get(cmd.form, cmd.form)}:") + "\n" + cmd.shell + "\n")


def remote(r: Remote, out: TextIO, style: Style) -> None:
    pod = r.pod
    out.write(style.bold(f"pod {pod.namespace}/{pod.name}") + f"  container {pod.container} on node {pod.node}\n")
    out.write(f"  {r.note}\n")
    if r.command:
        out.write("\n" + r.command.shell + "\n")


def plan(targets: Sequence[Target], remotes: Sequence[Remote], out: TextIO, wide: bool = False) -> None:
    style = Style(out)
    blocks = 0
    for t in targets:
        out.write("\n" if blocks else "")
        target(t, out, wide, style)
        blocks += 1
    for r in remotes:
        out.write("\n" if blocks else "")
        remote(r, out, style)
        blocks += 1


def quiet(targets: Sequence[Target], remotes: Sequence[Remote], out: TextIO) -> None:
    """Only the recommended shell lines, one per probe: for $(...) and scripts."""
    for t in targets:
        for probe in t.probes:
            out.write(probe.commands[0].shell + "\n")
    for r in remotes:
        if r.command:
            out.write(r.command.shell + "\n")
