"""``--run -o json``: what bpftrace prints for an action, as the protocol's messages.

One JSON line per message (protocol.encode), so a local run and the agent share
one encoder: "started" once bpftrace says its probes are attached, an "event"
per call of the per-call actions as the line arrives, one "aggregate" from the
maps bpftrace prints at exit (count, latency; stacks from ctrace's own naming),
"end" last. The formats read here are those of ctrace's programs (actions.py)
on bpftrace 0.17, 0.23 and 0.27 alike; a line of a user's own program is a
"text" event. Anything else bpftrace writes to stdout (not an event, not a map)
goes to stderr, beside its other diagnostics.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence

from ctrace.agent import protocol as p
from ctrace.bpftrace.dialect import ATTACHED, MACHINE_WARNINGS
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import TextIO

    from ctrace.model import Process
    from ctrace.run.stacks import Named


class Labels(Record):
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None


def labels_of(proc: Process) -> Labels:
    """A pod's namespace, name and container; a container's name; nothing for a host process."""
    if proc.pod is not None:
        return Labels(proc.pod.namespace, proc.pod.name, proc.pod.container)
    c = proc.container
    return Labels(container=(c.name.lstrip("/") or c.id[:12]) if c is not None else None)


# A program over several containers (plan/combined.py) also names the event's container
# (binding.owner): "pid=N (docker container web-1) label ...", "@calls[N, label, docker
# container web-1]". A label has no space (emit.label) and an owner always has one.
_OWNER = r"[^()\],]* [^()\],]*"
# actions.args and actions.stack: "pid=N label ..." (a combined stack program: "pid=N" alone)
_EVENT = re.compile(rf"pid=(\d+)(?: \({_OWNER}\))?(?: (\S+))?(?: (.*))?\Z")
_ARG = re.compile(r"(arg\d|retval)=(0x[0-9a-f]+)\Z")
_COUNT = re.compile(rf'@calls\[(\d+), "?(\S*?)"?(?:, {_OWNER})?\]: (\d+)\Z')
_HIST_KEY = re.compile(rf'@usecs\[(\d+)(?:, "?(\S*?)"?)?(?:, {_OWNER})?\]:\s*\Z')  # older programs: @usecs[PID]
_BUCKET = re.compile(r"\[(\d+[KMGT]?)(?:, (\d+[KMGT]?))?[\])]\s+(\d+) \|")  # [8K, 16K) or [0]
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def bucket(line: str) -> tuple[int, int, int] | None:
    """``[8K, 16K)   13 |@@@|`` as (8192, 16384, 13); ``[0]  2 |@|`` as (0, 1, 2)."""
    m = _BUCKET.match(line)
    if m is None:
        return None
    low = _value(m.group(1))
    high = _value(m.group(2)) if m.group(2) else (low + 1 if low is not None else None)
    if low is None or high is None:
        return None
    return low, high, int(m.group(3))


def _value(text: str) -> int | None:
    m = re.fullmatch(r"(\d+)([KMGT]?)", text)
    return int(m.group(1)) * _UNITS[m.group(2)] if m else None


class Stream:
    """bpftrace's stdout lines in, protocol lines out (``line`` from the reader thread)."""

    def __init__(
        self,
        out: TextIO,
        action: str | None,  # None: a user's program, every line a "text" event
        functions: Mapping[str, str],  # the program's label -> the function's name
        labels: Mapping[int, Labels],
        legend: Sequence[str] = (),
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.out, self.action, self.functions = out, action, functions
        self.labels, self.legend = labels, tuple(p.clip(line, 4096) for line in legend)
        self.log = log or (lambda text: sys.stderr.write(text + "\n"))
        self._lock = threading.Lock()
        self._maps: list[str] = []
        self._stack: p.Event | None = None
        self._frames: list[str] = []
        self.started = False
        self.events = 0
        self.errors: list[str] = []  # bpftrace's own error lines, for the end's reason

    def write(self, msg: p.Message) -> None:
        with self._lock:
            if isinstance(msg, p.Event):
                self._start()  # an event says the probes are in, whichever of bpftrace's pipes was read first
            for line in p.encode_all(msg):
                self.out.write(line.decode())
            self.out.flush()

    def _start(self) -> None:
        """ "started", once (the caller holds the lock)."""
        if not self.started:
            self.started = True
            self.out.write(p.encode(p.Started(tuple(sorted(self.labels)), self.legend)).decode())

    def error_line(self, text: str) -> None:
        """A line bpftrace wrote to stderr: passed on, and "started" when it says the probes are in."""
        text = text.rstrip("\n")
        if self._attached(text):
            return
        self.log(text)
        if "ERROR" in text and not any(rx.search(text) for rx in MACHINE_WARNINGS) and len(self.errors) < 5:
            self.errors.append(text.strip())

    def _attached(self, text: str) -> bool:
        """Whether the line is bpftrace's word that the probes are attached (then "started" is said)."""
        if not ATTACHED.match(text):
            return False
        with self._lock:
            self._start()
            self.out.flush()
        return True

    def line(self, text: str) -> None:
        text = text.rstrip("\n")
        if self._attached(text):
            return
        if self.action is None:
            if text.strip():  # bpftrace's blank lines around its map dumps
                self.write(p.Event(text=text))
        elif self._maps or text.startswith("@"):
            self._maps.append(text)
        elif self.action == "stack":
            self._stack_line(text)
        elif self.action == "args" and (event := self._args(text)) is not None:
            self._emit(event)
        elif text.strip():
            self.log(text)

    def _label(self, event: p.Event) -> p.Event:
        found = self.labels.get(event.pid or 0)
        if found is None and len(set(self.labels.values())) == 1:
            found = next(iter(self.labels.values()))  # a child forked after attach: its parent's
        return event._replace(**found._asdict()) if found is not None else event

    def _emit(self, event: p.Event) -> None:
        self.events += 1
        self.write(self._label(event))

    def _func(self, label: str) -> str:
        return self.functions.get(label, label)

    def _first(self) -> str:
        """The function of a line or key that names none (one function probed)."""
        return next(iter(self.functions.values()), "")

    def _args(self, text: str) -> p.Event | None:
        m = _EVENT.match(text)
        if m is None or m.group(3) is None:
            return None
        fields = [_ARG.match(f) for f in m.group(3).split()]
        if not fields or None in fields:
            return None
        values = {f.group(1): f.group(2) for f in fields if f is not None}
        args = tuple(values[f"arg{i}"] for i in range(6) if f"arg{i}" in values)
        event = p.Event(int(m.group(1)), self._func(m.group(2)))
        return event._replace(args=args or None, retval=values.get("retval"))

    def _stack_line(self, text: str) -> None:
        """``pid=N label``, a frame per indented line, a blank line after the last."""
        if self._stack is not None and text.startswith((" ", "\t")) and text.strip():
            if len(self._frames) < p.MAX_FRAMES:
                self._frames.append(p.clip(text.strip()))
            return
        self._flush_stack()
        m = _EVENT.match(text)
        if m is not None and m.group(3) is None:
            label = m.group(2)
            self._stack = p.Event(int(m.group(1)), self._func(label) if label else self._first())
        elif text.strip():
            self.log(text)

    def _flush_stack(self) -> None:
        if self._stack is not None:
            self._emit(self._stack._replace(frames=tuple(self._frames)))
        self._stack, self._frames = None, []

    def finish(self, stacks: Sequence[Named] | None = None) -> None:
        """At exit: the last stack event, then the aggregate of the action's maps (or of ``stacks``)."""
        self._flush_stack()
        rows: list[p.Row] = []
        if self.action == "count":
            rows = self._counts()
        elif self.action == "latency":
            rows = self._latency()
        elif self.action == "stacks" and stacks is not None:
            rows = [self._stacks_row(n) for n in stacks]
        else:
            for text in self._maps:
                self.log(text)
            return
        self.write(p.Aggregate(self.action, tuple(self._row_labels(r) for r in rows)))

    def _row_labels(self, row: p.Row) -> p.Row:
        event = self._label(p.Event(row.pid, row.func))
        return row._replace(namespace=event.namespace, pod=event.pod, container=event.container)

    def _counts(self) -> list[p.Row]:
        found = [_COUNT.match(t) for t in self._maps]
        return [p.Row(int(m.group(1)), self._func(m.group(2)), calls=int(m.group(3))) for m in found if m]

    def _latency(self) -> list[p.Row]:
        """``@usecs[PID, label]:`` then its buckets (``@usecs[PID]``: the one function probed)."""
        rows: dict[tuple[int, str], list[tuple[int, int, int]]] = {}
        key: tuple[int, str] | None = None
        for text in self._maps:
            if (m := _HIST_KEY.match(text)) is not None:
                key = int(m.group(1)), self._func(m.group(2)) if m.group(2) else self._first()
                rows[key] = []
            elif key is not None and (found := bucket(text)) is not None:
                rows[key].append(found)
        return [p.Row(pid, func, buckets=tuple(b)) for (pid, func), b in rows.items()]

    def _stacks_row(self, n: Named) -> p.Row:
        func = self._func(n.stack.probe)
        frames = tuple(p.clip(name) for name in n.names[: p.MAX_FRAMES])
        return p.Row(n.stack.pid, func, calls=n.stack.calls, frames=frames)

    def end(self, code: int, reason: str | None = None) -> None:
        self.write(p.End(code, reason or self.reason(code)))

    def reason(self, code: int) -> str:
        if code in (p.OK, p.STOPPED):
            return "ended" if code == p.OK else "stopped"
        said = f": {self.errors[0]}" if self.errors else ""
        return f"bpftrace exited with status {code}{said}"
