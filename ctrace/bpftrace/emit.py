"""bpftrace argv and shell lines; pure, and the only place that quotes anything.

Two quoting layers, each closed here:
- the bpftrace program: a path or symbol goes in bare only if it is a plain
  identifier, else inside "..." only if it holds printable ASCII without '"'
  or '\\' (bpftrace 0.17 reads escapes inside quotes), else the probe falls
  back to a numeric address, which nothing can smuggle code through;
- the shell: ``shlex.join`` of the argv, which ``shlex.split`` turns back
  into the same argv.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from ctrace.elf.names import last_component
from ctrace.model import AGENT_NAMESPACE, Command, Pod

BARE_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_BARE_PATH = re.compile(r"/[A-Za-z0-9_./+@-]*\Z")
_QUOTABLE = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]+\Z")  # printable ASCII but " and \


def quote(text: str, bare: re.Pattern[str]) -> str | None:
    """``text`` as it may stand in an attach point, or None if it cannot."""
    if bare.match(text):
        return text
    if _QUOTABLE.match(text):
        return f'"{text}"'
    return None


def quote_path(path: str) -> str | None:
    return quote(path, _BARE_PATH)


_LABEL_DROP = re.compile(r"[^A-Za-z0-9_.:~<>()*&,+\[\]-]")


def label(name: str) -> str:
    """The function's short name as it may stand inside a bpftrace string literal (and a
    printf format): its last component, without quotes, backslashes or '%'."""
    base, types = _type_arguments(name)
    kept = _LABEL_DROP.sub("_", (last_component(_without_arguments(base)) or base) + types)[:48]
    return kept or "f"


def _type_arguments(name: str) -> tuple[str, str]:
    """A Go generic instance's name and its final type arguments, apart: ``main.F[go.shape.int_0]``
    -> (``main.F``, ``[go.shape.int_0]``), so the '.'s inside do not make ``int_0]`` its label."""
    if not name.endswith("]"):
        return name, ""
    depth = 0
    for i in range(len(name) - 1, 0, -1):
        depth += {"]": 1, "[": -1}.get(name[i], 0)
        if depth == 0:
            return name[:i], name[i:]
    return name, ""


def _without_arguments(name: str) -> str:
    """A demangled C++ name without its final argument list: ``ns::f(long, long)`` -> ``ns::f``."""
    if "::" not in name or not name.endswith(")"):
        return name
    depth = 0
    for i in range(len(name) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(name[i], 0)
        if depth == 0:
            return name[:i] if i > 0 else name
    return name


def command(
    form: str, pid: int, text: str, unsafe: bool = False, with_p: bool = True, program: str = "bpftrace"
) -> Command:
    """``bpftrace [--unsafe] [-p PID] -e PROGRAM``.

    The program binds to its processes itself (its predicate): -p restricts uprobes
    only from bpftrace 0.20 (dialect.pid_filters_uprobes). ``with_p`` adds -p, which
    makes bpftrace exit with the process, where the path allows it: for a process in
    another mount namespace bpftrace reads every path given with ``-p`` as inside that
    namespace (it prefixes ``/proc/PID/root``, utils.cpp path_for_pid_mountns), so a
    host-only path such as MergedDir must not carry ``-p``.
    """
    argv = [program]
    if unsafe:
        argv.append("--unsafe")
    if with_p:
        argv += ["-p", str(pid)]
    argv += ["-e", text]
    return Command(form, tuple(argv), shlex.join(argv))


def agent_command(pod: Pod, agent: str, funcs: Sequence[str], context: str | None = None) -> Command:
    """``kubectl exec`` into the node agent on the pod's node, running ctrace there.

    The agent has the node's PID namespace, so ctrace finds the container's host
    PID itself; a PID found here would mean nothing on that node.
    """
    argv = ["kubectl"]
    if context:
        argv += ["--context", context]
    argv += ["exec", "-it", "-n", AGENT_NAMESPACE, agent, "-c", "agent", "--"]
    argv += ["ctrace", "target", f"pod/{pod.name}", "-n", pod.namespace, "-c", pod.container]
    for func in funcs:
        argv += ["--func", func]
    argv.append("--run")
    return Command("agent", tuple(argv), shlex.join(argv))


def perf_event(symbol: str, address: int, pid: int) -> str:
    """A perf probe event name: letters, digits and '_', unique per address and process, at most 63 chars."""
    last = re.sub(r"[^A-Za-z0-9_]", "_", last_component(symbol)) or "f"
    if not last[0].isalpha():
        last = "f" + last
    return f"{last[:36]}_{address:x}_{pid}"


def perf_commands(pid: int, path: str, symbol: str, offset: int, seconds: int = 10) -> tuple[Command, ...]:
    """The perf path of the tracing-basics post (4.1.2): add a uprobe event, record it with DWARF call graphs for
    the PID, show it, remove the event. perf probe takes a raw number as the uprobe's file
    offset (perf 6.1, measured); a number, not the name, because ``pkg.(*T).m`` does not
    parse as a perf probe point."""
    event = f"ctrace:{perf_event(symbol, offset, pid)}"
    steps = [
        ["perf", "probe", "-x", path, "--add", f"{event}=0x{offset:x}"],
        ["perf", "record", "-e", event, "-p", str(pid), "-g", "--call-graph", "dwarf", "--", "sleep", str(seconds)],
        ["perf", "script"],
        ["perf", "probe", "--del", event],
    ]
    return tuple(Command(f"perf-{s[1]}", tuple(s), shlex.join(s)) for s in steps)
