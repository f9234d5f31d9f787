"""The agent protocol of PROTOCOL.md: its messages, each one JSON line, read strictly.

Pure: no I/O. ``encode`` writes one line; ``decode_client`` (what the agent reads) and
``decode_agent`` (what the client reads) accept exactly the messages of the spec and
raise ``ProtocolError`` (one line, a hint) for anything else: a line over 1 MiB, bad
JSON, duplicate keys, an unknown type or field, a wrong type, a value out of range.
The agent turns a request's fields into a ctrace argv, so what a field may hold is
narrower than JSON: Kubernetes names as the API server validates them, function
patterns in the characters symbol names and globs use, never a leading '-'.
"""

from __future__ import annotations

import json
import re

from ctrace import __version__
from ctrace.agent.checks import ProtocolError as ProtocolError  # raised by decode: the client catches it here
from ctrace.agent.checks import (
    choice,
    integer,
    json_kind,
    listof,
    no_constant,
    no_duplicates,
    number,
    optional,
    pattern,
    text,
)
from ctrace.agent.checks import peek_version as peek_version
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ctrace.agent.checks import Check

VERSION = __version__  # compared exactly: a mismatch is one line naming both (version_mismatch)
PORT = 7117
MAX_LINE = 1 << 20  # bytes of one line, without its newline
MAX_FUNCTIONS = 64
MAX_PATTERN = 512
MAX_PROGRAM = 64 * 1024  # runner.LONGEST_ARG: a longer -e would be spilled to a file
MAX_FRAMES = 256  # frames of one stack; bpftrace's ustack gives at most 127
MAX_FRAME_NAME = 2048  # a frame's name is clipped to this (clip): 256 of them stay far below MAX_LINE
ACTIONS = ("count", "args", "latency", "stack", "stacks")
PER_CALL = ("args", "stack")  # actions that send events; the others one aggregate at the end
PROBES = ("entry", "uretprobe", "return")
CTRACE_PROBE = {"entry": "uprobe", "uretprobe": "uretprobe", "return": "return"}  # ctrace's --probe
PING_EVERY = 2.0  # the client sends a ping at least this often
SILENCE = 6.0  # the agent ends a run after this long without a line from the client
STOP_GRACE = 2.0  # SIGINT, then SIGKILL after this long
DEADLINE_SLACK = 10.0  # a run with a duration ends at duration + this at the latest
NO_DURATION = 3600.0  # a run without a duration ends after this at the latest
OK, GONE, STOPPED = 0, 1, 130  # end codes: ctrace's exit codes


class Request(Record):
    namespace: str
    pod: str
    pod_uid: str
    functions: tuple[str, ...]
    action: str
    container: str | None = None
    lib: str | None = None
    probe: str = "entry"
    duration: float | None = None
    program: str | None = None


class Run(Record):
    version: str
    request: Request


class Ping(Record):
    """Sent at least every PING_EVERY seconds while a run lasts."""


class Stop(Record):
    """End the run early (Ctrl-C): the aggregate and "end" still come."""


class Hello(Record):
    version: str
    node: str


class Error(Record):
    message: str
    hint: str | None = None


class Started(Record):
    pids: tuple[int, ...]
    legend: tuple[str, ...]


class Event(Record):
    """One call (args, stack), or one output line of a user's program (text)."""

    pid: int | None = None
    func: str | None = None
    args: tuple[str, ...] | None = None  # hex, arg0 first
    retval: str | None = None  # hex
    frames: tuple[str, ...] | None = None  # leaf first, named
    text: str | None = None
    node: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None


class Row(Record):
    """One row of an aggregate: count has calls; latency buckets; stacks calls and frames."""

    pid: int
    func: str
    calls: int | None = None  # "count" on the wire (a NamedTuple's count is tuple.count)
    buckets: tuple[tuple[int, int, int], ...] | None = None  # (low_us, high_us, calls), low inclusive
    frames: tuple[str, ...] | None = None
    node: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None


class Aggregate(Record):
    action: str
    rows: tuple[Row, ...]


class End(Record):
    code: int
    reason: str


Message = Run | Ping | Stop | Hello | Error | Started | Event | Aggregate | End
CLIENT: dict[str, type[Message]] = {"run": Run, "ping": Ping, "stop": Stop}
AGENT: dict[str, type[Message]] = {
    "hello": Hello,
    "error": Error,
    "started": Started,
    "event": Event,
    "aggregate": Aggregate,
    "end": End,
}
TYPE_OF: dict[type[Message], str] = {cls: name for table in (CLIENT, AGENT) for name, cls in table.items()}
LABELS = ("node", "namespace", "pod", "container")
SKIPPED_WHEN_NONE = {"pid", "func", "args", "retval", "frames", "text", "calls", "buckets"}
WIRE = {"calls": "count"}  # record field -> wire name, where they differ
FIELD = {wire: name for name, wire in WIRE.items()}


# ---- encoding


def encode(msg: Message) -> bytes:
    """One line, newline included. Refuses a message over MAX_LINE (see split for aggregates)."""
    line = json.dumps(_plain(msg), separators=(",", ":"), allow_nan=False).encode()
    if len(line) > MAX_LINE:
        raise ProtocolError(f"a {TYPE_OF[type(msg)]} message of {len(line)} bytes is over the line limit")
    return line + b"\n"


def encode_all(msg: Message) -> list[bytes]:
    """Lines for ``msg``: an aggregate too long for one line becomes several (split)."""
    if isinstance(msg, Aggregate):
        return [encode(part) for part in split(msg)]
    return [encode(msg)]


def split(agg: Aggregate, limit: int = MAX_LINE) -> list[Aggregate]:
    """An aggregate as several with the same action, each line under ``limit``; a
    reader takes the rows of every aggregate before "end"."""
    parts: list[Aggregate] = []
    rows: list[Row] = []
    size = len(json.dumps(_plain(Aggregate(agg.action, ()))))
    for row in agg.rows:
        grows = len(json.dumps(_plain(row), separators=(",", ":"))) + 1
        if rows and size + grows > limit:
            parts.append(Aggregate(agg.action, tuple(rows)))
            rows, size = [], len(json.dumps(_plain(Aggregate(agg.action, ()))))
        rows.append(row)
        size += grows
    return [*parts, Aggregate(agg.action, tuple(rows))]


def _plain(value: Any) -> Any:
    kind = TYPE_OF.get(type(value))
    if kind is not None:
        out = {"type": kind}
        out.update(_fields(value))
        return out
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # Request, Row
        return _fields(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _fields(record: Any) -> dict[str, Any]:
    pairs = zip(record._fields, record)
    return {WIRE.get(k, k): _plain(v) for k, v in pairs if v is not None or k not in SKIPPED_WHEN_NONE}


def clip(text: str, limit: int = MAX_FRAME_NAME) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def labelled(msg: Message, node: str | None) -> Message:
    """An event or aggregate with its node label set (the agent adds it); others unchanged."""
    if isinstance(msg, Event):
        return msg._replace(node=node)
    if isinstance(msg, Aggregate):
        return msg._replace(rows=tuple(r._replace(node=node) for r in msg.rows))
    return msg


def version_mismatch(client: str, agent: str, node: str = "") -> str | None:
    """The one line both sides say when the versions differ, or None."""
    if client == agent:
        return None
    where = f"the ctrace agent on node {node}" if node else "the ctrace agent"
    return f"version mismatch: this ctrace is {client}, {where} is {agent}; they must be the same"


def deadline(duration: float | None) -> float:
    """Seconds after which the agent ends a run whatever the client says."""
    return NO_DURATION if duration is None else duration + DEADLINE_SLACK


# ---- decoding


def decode_client(line: bytes | str) -> Run | Ping | Stop:
    """A line the client sent to the agent."""
    return _decode(line, CLIENT)  # type: ignore[return-value]


def decode_agent(line: bytes | str) -> Message:
    """A line the agent sent to the client (or ``ctrace --run -o json`` printed)."""
    return _decode(line, AGENT)


def _decode(line: bytes | str, table: dict[str, type[Message]]) -> Message:
    raw = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line
    raw = raw.removesuffix(b"\n")
    if len(raw) > MAX_LINE:
        raise ProtocolError(f"a line of {len(raw)} bytes is over the limit of {MAX_LINE} (1 MiB)")
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except (ValueError, RecursionError) as err:
        raise ProtocolError(f"not a JSON object: {str(err)[:200]}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"a message is a JSON object, not {json_kind(data)}")
    kind = data.pop("type", None)
    if not isinstance(kind, str) or kind not in table:
        shown = repr(kind)[:60] if kind is not None else "none"
        raise ProtocolError(f"unknown message type {shown}: expected one of {', '.join(table)}")
    made: Message = _record(table[kind], data, kind)
    return made


def _record(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    checks = SCHEMA[cls]
    unknown = sorted(set(data) - set(checks))
    if unknown:
        raise ProtocolError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(checks) or 'none'})")
    values = {}
    for name, check in checks.items():  # wire names
        field = FIELD.get(name, name)
        if name not in data:
            if field not in cls._field_defaults:
                raise ProtocolError(f"{where}: field {name!r} is missing")
            continue
        values[field] = check(data[name], f"{where}.{name}")
    made = cls(**values)
    for test in WHOLE.get(cls, ()):
        test(made, where)
    return made


def function_pattern(value: Any, where: str) -> str:
    """A function name or glob: the characters of C, C++, Rust and Go symbol names (mangled
    or not) and of globs; no quote, backslash, ';', '|', '`', '$(' or '${', no leading '-'."""
    given: str = text(MAX_PATTERN, empty=False)(value, where)
    bad = _BAD_PATTERN.search(given)
    if given.startswith("-") or not given.strip():
        raise ProtocolError(f"{where} {given[:80]!r} starts with '-' or is blank: not a function name or glob", _NAMES)
    if bad:
        said = f"{where} {given[:80]!r} holds {bad.group(0)!r}, which no function name or glob has"
        raise ProtocolError(said, _NAMES)
    return given


_NAMES = "give a function name or a glob (ngx_http_*, 'ns::f(int)', main.(*T).Serve)"


def record(cls: type[Any]) -> Check:
    def check(value: Any, where: str) -> Any:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where} must be an object, not {json_kind(value)}")
        return _record(cls, dict(value), where)

    return check


_BAD_PATTERN = re.compile(r"[^\w.:$@*?\[\]<>(),~&/{}+=!%^# -]|\$\(|\$\{")
DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
NAMESPACE = pattern(DNS_LABEL, 63, "a Kubernetes namespace name")
POD = pattern(rf"{DNS_LABEL}(\.{DNS_LABEL})*", 253, "a Kubernetes pod name")
CONTAINER = pattern(DNS_LABEL, 63, "a Kubernetes container name")
UID = pattern(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", 36, "a pod UID")
LIB = pattern(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", 255, "a library file name (or its start)")
HEX = pattern(r"0x[0-9a-f]{1,16}", 18, "a hex number")
VERSION_TEXT = pattern(r"[A-Za-z0-9.+_-]+", 64, "a version")
LABEL = optional(text(253))
NAME = text(4096, empty=False)
FRAMES = listof(text(MAX_FRAME_NAME), 0, MAX_FRAMES)
PID = integer(1, 1 << 22)  # PID_MAX_LIMIT
COUNT = integer(0, 1 << 63)
BUCKET = listof(COUNT, 3, 3)
LABEL_CHECKS: dict[str, Check] = {name: LABEL for name in LABELS}

SCHEMA: dict[type[Any], dict[str, Check]] = {
    Request: {
        "namespace": NAMESPACE,
        "pod": POD,
        "pod_uid": UID,
        "functions": listof(function_pattern, 0, MAX_FUNCTIONS),
        "action": choice(ACTIONS),
        "container": optional(CONTAINER),
        "lib": optional(LIB),
        "probe": choice(PROBES),
        "duration": optional(number(0.0, 7 * 86400.0)),
        "program": optional(text(MAX_PROGRAM, lines=True, empty=False)),
    },
    Run: {"version": VERSION_TEXT, "request": record(Request)},
    Ping: {},
    Stop: {},
    Hello: {"version": VERSION_TEXT, "node": text(253)},
    Error: {"message": text(16384, lines=True, empty=False), "hint": optional(text(16384, lines=True))},
    Started: {"pids": listof(PID, 0, 65536), "legend": listof(text(4096), 0, 65536)},
    Event: {
        "pid": optional(PID),
        "func": optional(NAME),
        "args": optional(listof(HEX, 0, 6)),
        "retval": optional(HEX),
        "frames": optional(FRAMES),
        "text": optional(text(MAX_PROGRAM, lines=True)),
        **LABEL_CHECKS,
    },
    Row: {
        "pid": PID,
        "func": NAME,
        "count": optional(COUNT),
        "buckets": optional(listof(BUCKET, 0, 128)),
        "frames": optional(FRAMES),
        **LABEL_CHECKS,
    },
    Aggregate: {"action": choice(("count", "latency", "stacks")), "rows": listof(record(Row), 0, 1 << 20)},
    End: {"code": integer(0, 255), "reason": text(16384, lines=True)},
}


def _request_whole(req: Request, where: str) -> None:
    if req.program is None and not req.functions:
        raise ProtocolError(f"{where}.functions is empty: give 1..{MAX_FUNCTIONS} patterns (or a program)")


def _event_whole(event: Event, where: str) -> None:
    if event.text is None and (event.pid is None or event.func is None):
        raise ProtocolError(f"{where}: an event has pid and func, or text")


def _row_whole(row: Row, where: str) -> None:
    if row.calls is None and row.buckets is None:
        raise ProtocolError(f"{where}: a row has count or buckets")


def _aggregate_whole(agg: Aggregate, where: str) -> None:
    need = {"count": ("calls",), "latency": ("buckets",), "stacks": ("calls", "frames")}[agg.action]
    for i, row in enumerate(agg.rows):
        missing = [WIRE.get(n, n) for n in need if getattr(row, n) is None]
        if missing:
            raise ProtocolError(f"{where}.rows[{i}]: a {agg.action} row needs {missing[0]}")


WHOLE: dict[type[Any], tuple[Callable[[Any, str], None], ...]] = {
    Request: (_request_whole,),
    Event: (_event_whole,),
    Row: (_row_whole,),
    Aggregate: (_aggregate_whole,),
}
