"""What a person reads: one block per target, the command to run at the left margin;
and the text tables of ``ps`` and ``ns``.

Commands start at column 0 so a triple-click copies exactly the command (and a
leading space would keep it out of bash's history under HISTCONTROL=ignorespace).
Colour only on a terminal, and never when NO_COLOR is set (no-color.org).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from ctrace.model import Command, Probe, Process, Remote, Target
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, TextIO

FORMS = {
    "proc-root": "/proc/PID/root",
    "merged": "the container's MergedDir (overlay2)",
    "rootfs": "the runtime's root filesystem (a containerd task's rootfs, podman's or CRI-O's mount)",
    "pid-path": "-p PID with the in-container path",
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
    c = p.container
    node = f", in {c.node.runtime} container {c.node.name or c.node.id[:12]}" if c and c.node else ""
    if p.pod is not None:
        ident = f" [{c.runtime} {c.id[:12]}]" if c else ""
        return f"pod {p.pod.namespace}/{p.pod.name} container {p.pod.container}{ident} on {p.pod.node or '?'}{node}"
    if c is None:
        return "host process"
    init = " (its init process)" if p.init else ""
    image = f", image {c.image}" if c.image else ""
    space = f" in namespace {c.namespace}" if c.namespace and c.runtime == "containerd" else ""
    return f"{c.runtime} container {c.name or c.id[:12]}{space} [{c.id[:12]}{image}]{init}{node}"


def _first_namespace() -> str:
    """Whose PIDs /proc shows first: the host's, or (a hostPID agent on a kind-like node) ctrace's own."""
    from ctrace.proc.procfs import INIT_PID_NS, pid_ns

    return "host" if pid_ns("self") in (None, INIT_PID_NS) else "ctrace's PID namespace"


def target(t: Target, out: TextIO, wide: bool, style: Style) -> None:
    p, b = t.process, t.binary
    out.write(style.bold(f"{p.comm}  pid {p.pid}") + f"  {where(p)}\n")
    out.write(f"  NSpid    {chain(p.nspid)}  ({_first_namespace()} -> innermost PID namespace)\n")
    state = "stripped" if b.stripped else "not stripped"
    out.write(f"  binary   {b.path}  ({b.language}, {state}, build-id {b.build_id or '-'})\n")
    out.write(f"  host     {b.host_path}\n")
    if b.merged_path:
        out.write(f"  {'merged' if p.container and p.container.merged_dir else 'rootfs'}   {b.merged_path}\n")
    for w in t.warnings:
        out.write(style.warn(f"  warning: {w}") + "\n")
    if len(t.probes) > MANY and not wide:
        many(t, out, style)
        return
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
            out.write(style.dim("# perf: add the event, record it with DWARF stacks, show, remove") + "\n")
            out.write("".join(c.shell + "\n" for c in probe.perf))


MANY = 12  # more matched functions than this print as a summary; -o wide prints each command


def many(t: Target, out: TextIO, style: Style) -> None:
    """A pattern matching 1,369 functions: not 1,369 command lines, but what they are and how to run them."""
    names = [p.demangled or p.symbol for p in t.probes]
    shown = ", ".join(names[:5])
    out.write(f"\n  {len(names)} functions match: {shown}, ... (-o wide prints each one's command, -q the lines)\n")
    out.write(
        style.dim("  add --run to probe them all in one bpftrace program, stacks counted per function and PID") + "\n"
    )
    out.write(
        style.dim("  (bpftrace attaches them one by one: 74 functions of dockerd took 34 s on 0.17, 10 s on 0.27)")
        + "\n"
    )


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
    """Only the recommended shell lines, one per probe: for $(...) and scripts.

    One line alone is the command, so ``$(ctrace ... -q)`` runs it. Several are each
    preceded by a ``# PID FUNCTION`` comment line naming what it traces (a shell reads
    it as a comment: ``eval`` and ``sh`` still run the output as it is)."""
    lines = [(f"{t.process.pid} {_label(p)}", p.commands[0].shell) for t in targets for p in t.probes]
    lines += [(f"pod {r.pod.namespace}/{r.pod.name}", r.command.shell) for r in remotes if r.command]
    for label, shell in lines:
        out.write(f"# {label}\n{shell}\n" if len(lines) > 1 else shell + "\n")


def _label(probe: Probe) -> str:
    """The function's name as one comment line: a newline in a symbol name must not end the comment."""
    name = probe.demangled or probe.symbol
    return name if name.isprintable() else ascii(name)


def table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Left-aligned columns; the last column is not padded."""
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]
        out.write("  ".join(cells).rstrip() + "\n")


def ns_text(d: dict[str, Any], out: TextIO) -> None:
    for key in ("pid", "nspid", "nstgid", "nspgid", "nssid"):
        value = d[key]
        out.write(f"{key:<10}{chain(value) if isinstance(value, list) else value}\n")
    c, pod = d.get("container"), d.get("pod")
    while c:  # innermost first, then the node container it runs in
        space = f" namespace {c['namespace']}" if c.get("namespace") else ""
        out.write(f"{'container':<10}{c['runtime']} {c['name'] or '-'} {c['id'][:12]}{space}\n")
        c = c.get("node")
    if pod:
        out.write(f"{'pod':<10}{pod['namespace']}/{pod['name']} container {pod['container']} uid {pod['uid']}\n")
    out.write(f"{'child pid namespace':<10} {'yes' if d['in_child_pid_namespace'] else 'no'}\n")
    table([[name, str(ident)] for name, ident in d["namespaces"].items()], out)


def ps_text(procs: Sequence[Process], out: TextIO, details: Mapping[int, Mapping[str, Any]] | None = None) -> None:
    """The process table; with ``details`` (-o wide) also user, start time and resident memory."""
    head = ["PID", "NSPID", "CPID", "COMM", "RUNTIME", "CONTAINER", "CONTAINER ID", "POD"]
    rows = [[*head, *(("USER", "START", "RSS") if details is not None else ()), "EXE"]]
    for p in procs:
        c = p.container
        name = (c.name or "-") + ("*" if p.init else "") if c else "-"
        exe = p.exe + (" (deleted)" if p.deleted else "")
        pod = f"{p.pod.namespace}/{p.pod.name}" if p.pod else "-"
        runtime = c.runtime if c else "-"
        row = [str(p.pid), chain(p.nspid), str(p.nspid[-1]), p.comm, runtime, name, c.id[:12] if c else "-", pod]
        if details is not None:
            row += _wide(details.get(p.pid))
        rows.append([*row, exe])
    table(rows, out)


def _wide(d: Mapping[str, Any] | None) -> list[str]:
    if d is None:
        return ["-", "-", "-"]
    return [str(d["user"]), started(d["started"]), size(d["rss"])]


def started(when: float, now: float | None = None) -> str:
    """As ps(1) shows START: the time of day for today, else the month and day."""
    import time

    now = time.time() if now is None else now
    moment = time.localtime(when)
    return time.strftime("%H:%M" if now - when < 86400 else "%b%d", moment)


def size(n: int) -> str:
    """A byte count in KiB, MiB or GiB, as kubectl top shows memory."""
    for unit in ("Ki", "Mi", "Gi"):
        n_units = n / 1024
        if n_units < 1024 or unit == "Gi":
            return f"{n_units:.0f}{unit}" if n_units >= 10 else f"{n_units:.1f}{unit}"
        n = int(n_units)
    return str(n)
