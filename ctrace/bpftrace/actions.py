"""--action: one row per action, saying what program it writes and which probes and
languages it takes. A new action is one more row in ACTIONS.

Each program carries the PID in what it prints and in every aggregation key, names the
function by a short label instead of bpftrace's ``probe`` (the whole attach point,
path included), and compiles without warnings on every bpftrace ctrace knows
(ctrace/bpftrace/dialect.py).
"""

from __future__ import annotations

from ctrace.bpftrace.dialect import Dialect
from ctrace.errors import UsageError
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from collections.abc import Callable

WHOLE = "whole"  # --run --all: one block over every distinct attach point
EACH = "each"  # --run --all: one block per function, each keyed by its own label
PROBES = ("uprobe", "uretprobe", "return")  # --probe: the entry, a uretprobe, a uprobe on each RET
LANGUAGES = ("c", "c++", "rust", "go")


class Block(Record):
    """What an action writes its program from: one function under one path form."""

    points: tuple[str, ...]  # where --probe attaches: the entry, the uretprobe, or each RET
    bind: str  # the predicate admitting the target's processes ("pid == 42"), or ""
    label: str  # the function's short name, safe inside a bpftrace string
    language: str
    probe: str = "uprobe"  # --probe
    dialect: Dialect = Dialect()
    exits: tuple[str, ...] = ()  # latency: where the call returns
    exit_kind: str = "uretprobe"  # how ``exits`` are probed ("uprobe" on each RET for Go)
    owner: str = ""  # over several containers: the event's container or pod (binding.Binding.owner)
    start: str = "@start"  # latency's map of entry times: one per function in a combined program
    pid: str = "pid"  # the PID printed and keyed: binding.Binding.pid (another expression in a child PID namespace)
    tid: str = "tid"  # a thread's key: binding.Binding.tid


class Action(Record):
    name: str
    help: str
    program: Callable[[Block], str]
    probes: tuple[str, ...] = PROBES
    languages: tuple[str, ...] = LANGUAGES
    exits: bool = False  # the program also needs where the function returns
    refused_hint: str = ""  # the way out for a --probe it does not take
    combines: str = ""  # how --run --all makes one program of it (WHOLE or EACH); "" refuses
    named: bool = False  # ctrace reads its output and names the stacks (run/stacks.py), so --folded, --flamegraph
    ustack: bool = False  # the program reads ustack (dialect.ns_pid_helper)


def when(*conditions: str) -> str:
    """A predicate from the non-empty conditions, or nothing (a binding's ``a || b`` kept whole)."""
    kept = [c for c in conditions if c]
    if len(kept) > 1:
        kept = [f"({c})" if "||" in c else c for c in kept]
    return f" /{' && '.join(kept)}/" if kept else ""


def head(b: Block) -> str:
    return f"{', '.join(b.points)}{when(b.bind)}"


def _who(b: Block) -> tuple[str, str]:
    """printf's format and arguments naming the event: ``pid=N``, and ``(its container)``
    in a program over several."""
    return (" (%s)", f", {b.owner}") if b.owner else ("", "")


def _key(b: Block) -> str:
    """An aggregation's key: the PID, the function, and the container when there are several."""
    return f'{b.pid}, "{b.label}"' + (f", {b.owner}" if b.owner else "")


def stack(b: Block) -> str:
    """Each event: a ``pid=N label`` line, then the frames (ustack starts with a newline)."""
    name = f" {b.label}" if b.label else ""
    fmt, who = _who(b)
    return f'{head(b)} {{ printf("pid=%d{fmt}{name}%s\\n", {b.pid}{who}, ustack); }}'


def stacks(b: Block) -> str:
    """Stacks counted in the kernel, keyed by function, PID, caller and the raw stack.

    ``ustack(perf)`` starts every frame with its address on bpftrace 0.17, 0.23 and 0.27
    (``ustack(raw)`` is 0.21+); ctrace names the addresses itself (symbolize.py), so frames
    of a process gone by print time, or seen from a container, still get names. At a
    function's entry the frame-pointer walk skips the caller (the callee has not pushed its
    frame yet), and at a RET (--probe return) the function has popped it already: at both,
    the return address on top of the stack is that caller. A uretprobe fires in the caller."""
    caller = '*(uint64 *)reg("sp")' if b.probe in ("uprobe", "return") else "0"
    return f'{head(b)} {{ @stacks["{b.label}", {b.pid}, {caller}, ustack(perf)] = count(); }}'


def count(b: Block) -> str:
    return f"{head(b)} {{ @calls[{_key(b)}] = count(); }}"


# Go's register ABI (Go 1.17+, amd64) passes integer arguments and results in RAX, RBX,
# RCX, RDI, RSI, R8..., not in the SysV registers bpftrace's arg0..arg5 read.
_GO_ARGS = ('reg("ax")', 'reg("bx")', 'reg("cx")', 'reg("di")', 'reg("si")', 'reg("r8")')
_C_ARGS = ("arg0", "arg1", "arg2", "arg3", "arg4", "arg5")


def args(b: Block) -> str:
    """The arguments at an entry; at a return the return value (a uretprobe has no
    arguments: bpftrace rejects arg0 there)."""
    fmt, who = _who(b)
    if b.probe == "uprobe":
        regs = _GO_ARGS if b.language == "go" else _C_ARGS
        fields = " ".join(f"arg{i}=0x%lx" for i in range(len(regs)))
        return f'{head(b)} {{ printf("pid=%d{fmt} {b.label} {fields}\\n", {b.pid}{who}, {", ".join(regs)}); }}'
    value = "retval" if b.probe == "uretprobe" else 'reg("ax")'  # a uprobe on RET: the result is in RAX
    return f'{head(b)} {{ printf("pid=%d{fmt} {b.label} retval=0x%lx\\n", {b.pid}{who}, {value}); }}'


def latency(b: Block) -> str:
    """Entry stamps the clock, each return adds to a histogram per PID.

    Keyed by thread for C, C++ and Rust; for Go by goroutine (the g pointer, which Go's
    amd64 ABI keeps in R14), because a goroutine that blocks resumes on another thread.
    The casts keep 0.27 from warning about signed division and implicit int casts."""
    key = f'{b.pid}, reg("r14")' if b.language == "go" else b.tid
    start = f"{b.start}[{key}]"
    took = f"(uint64)((int64)nsecs - (int64){start}) / (uint64)1000"
    exits = ", ".join(b.exits)
    return (
        f"{head(b)} {{ {start} = nsecs; }} "
        f"{exits}{when(b.bind, start)} {{ @usecs[{_key(b)}] = hist({took}); {b.dialect.delete(start)} }} "
        f"END {{ clear({b.start}); }}"  # calls still in flight at Ctrl-C are not results
    )


ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action(
            "stack",
            "the user stack (ustack) printed per call, the default without --run",
            stack,
            combines=WHOLE,
            ustack=True,
        ),
        Action(
            "stacks",
            "stacks counted per function and PID, named by ctrace; the default with --run",
            stacks,
            combines=EACH,
            named=True,
            ustack=True,
        ),
        Action("count", "calls per PID", count, combines=EACH),
        Action(
            "args",
            "arg0..arg5 at the entry (Go's registers for Go), the return value at a return",
            args,
            combines=EACH,
        ),
        Action(
            "latency",
            "entry to return, a histogram per PID (Go: keyed by goroutine, a uprobe on each RET)",
            latency,
            probes=("uprobe",),
            exits=True,
            refused_hint="drop --probe: --action latency probes the entry and every return itself",
            combines=EACH,
        ),
    )
}


DEFAULT = "stack"  # printed commands: a program that shows something per call
DEFAULT_RUN = "stacks"  # --run: counted in the kernel (a perf-buffer write per call costs the traced process)


def check(action: str, probe: str) -> Action:
    """The action's row, or a one-line refusal of a --probe it does not take."""
    row = ACTIONS[action]
    if probe not in row.probes:
        raise UsageError(f"--action {action} does not take --probe {probe}", row.refused_hint)
    return row


def check_language(row: Action, language: str, path: str) -> None:
    if language not in row.languages:
        raise UsageError(f"--action {row.name} is not available for {language} ({path})", row.refused_hint)
