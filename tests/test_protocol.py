"""The agent protocol (PROTOCOL.md): every message round-trips, anything else is one clear error."""

from __future__ import annotations

import json

import pytest

from ctrace.agent import protocol as p

UID = "3f1c2a4e-5b6d-4e7f-8a9b-0123456789ab"
REQUEST = p.Request("shop", "web-1", UID, ("hello", "ngx_http_*"), "count")


def run_line(**changes: object) -> bytes:
    """A run message as the client sends it, with ``changes`` to its request (None: field removed)."""
    request = json.loads(p.encode(p.Run(p.VERSION, REQUEST)))["request"]
    for key, value in changes.items():
        if value is None:
            request.pop(key, None)
        else:
            request[key] = value
    return json.dumps({"type": "run", "version": p.VERSION, "request": request}).encode()


MESSAGES: list[p.Message] = [
    p.Run(p.VERSION, REQUEST),
    p.Run("0.1.0", REQUEST._replace(container="app", lib="libc", probe="return", duration=2.5, program=None)),
    p.Run(p.VERSION, REQUEST._replace(functions=(), program='uprobe:$path:main { printf("%d\\n", $pid); }')),
    p.Ping(),
    p.Stop(),
]
AGENT_MESSAGES: list[p.Message] = [
    p.Hello(p.VERSION, "node-1"),
    p.Error("pod shop/web-1 is not on node node-1", None),
    p.Error("refused", "a hint"),
    p.Started((41, 42), ("PID 41 = containerd container app (pod shop/web-1)",)),
    p.Event(41, "hello", args=("0x1", "0xffffffffffffffff"), node="n", namespace="shop", pod="web-1", container="app"),
    p.Event(41, "hello", retval="0x0"),
    p.Event(41, "hello", frames=("hello", "main", "[libc.so.6+0x2724a]")),
    p.Event(text="a line of the user's program"),
    p.Aggregate("count", (p.Row(41, "hello", calls=7, node="n"),)),
    p.Aggregate("latency", (p.Row(41, "hello", buckets=((0, 1, 2), (512, 1024, 5))),)),
    p.Aggregate("stacks", (p.Row(41, "hello", calls=3, frames=("hello", "main")),)),
    p.End(130, "stopped by the client"),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_client_messages_round_trip(msg: p.Message) -> None:
    line = p.encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert p.decode_client(line) == msg


@pytest.mark.parametrize("msg", AGENT_MESSAGES, ids=lambda m: type(m).__name__)
def test_agent_messages_round_trip(msg: p.Message) -> None:
    line = p.encode(msg)
    assert line.count(b"\n") == 1
    assert p.decode_agent(line) == msg


def test_wire_shape_is_the_spec() -> None:
    assert json.loads(p.encode(p.Ping())) == {"type": "ping"}
    row = json.loads(p.encode(p.Aggregate("count", (p.Row(41, "hello", calls=7),))))["rows"][0]
    labels = {"node": None, "namespace": None, "pod": None, "container": None}
    assert row == {"pid": 41, "func": "hello", "count": 7, **labels}
    text = json.loads(p.encode(p.Event(text="x")))
    assert text == {"type": "event", "text": "x", **labels}
    request = json.loads(p.encode(p.Run(p.VERSION, REQUEST)))["request"]
    assert set(request) == {*p.Request._fields}


def test_defaults_of_optional_request_fields() -> None:
    line = run_line(container=None, lib=None, probe=None, duration=None, program=None)
    msg = p.decode_client(line)
    assert isinstance(msg, p.Run)
    assert msg.request == REQUEST


HOSTILE = {
    "shell metacharacters": (run_line(functions=["hello; rm -rf /"]), "';'"),
    "command substitution": (run_line(functions=["$(touch /tmp/x)"]), "'$('"),
    "backquotes": (run_line(functions=["`id`"]), "'`'"),
    "a flag as a function": (run_line(functions=["--unsafe"]), "starts with '-'"),
    "a flag as a library": (run_line(lib="--unsafe"), "not a library file name"),
    "a smuggled field": (run_line(unsafe=True), "unknown field 'unsafe'"),
    "a newline": (run_line(functions=["a\nb"]), "NUL or a line break"),
    "a NUL": (run_line(functions=["a\u0000b"]), "NUL or a line break"),
    "a path as a pod": (run_line(pod="../etc"), "not a Kubernetes pod name"),
    "a flag as a namespace": (run_line(namespace="-A"), "not a Kubernetes namespace name"),
    "a bad action": (run_line(action="system"), "expected one of count, args"),
    "a bad probe": (run_line(probe="kprobe"), "expected one of entry, uretprobe, return"),
    "too many functions": (run_line(functions=[f"f{i}" for i in range(65)]), "65 items; 0..64"),
    "no functions": (run_line(functions=[]), "functions is empty"),
    "a long pattern": (run_line(functions=["f" * 513]), "over the limit of 512"),
    "a string as duration": (run_line(duration="5"), "must be a number, not a string"),
    "a boolean as duration": (run_line(duration=True), "must be a number, not a boolean"),
    "a negative duration": (run_line(duration=-1), "outside"),
    "an infinite duration": (run_line().replace(b'"duration": null', b'"duration": 1e999'), "finite"),
    "NaN": (run_line().replace(b'"duration": null', b'"duration": NaN'), "NaN is not a number"),
    "a bad uid": (run_line(pod_uid="x"), "not a pod UID"),
    "a missing field": (run_line(namespace=None), "field 'namespace' is missing"),
    "a key twice": (b'{"type": "stop", "type": "ping"}', "field 'type' is given twice"),
    "an unknown type": (b'{"type": "exec", "argv": ["sh"]}', "unknown message type 'exec'"),
    "an agent message": (b'{"type": "hello", "version": "1", "node": "n"}', "unknown message type 'hello'"),
    "a list": (b"[1, 2]", "a JSON object, not a list"),
    "not JSON": (b"GET / HTTP/1.1", "not a JSON object"),
    "deep nesting": (b"[" * 100_000, "not a JSON object"),
    "not UTF-8": (b'{"type": "\xff"}', "not a JSON object"),
    "a line over 1 MiB": (b'{"type": "ping", "x": "' + b"a" * (1 << 20) + b'"}', "over the limit of 1048576"),
    "a ping with a field": (b'{"type": "ping", "n": 1}', "unknown field 'n'"),
}


@pytest.mark.parametrize("line, said", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_lines_are_one_clear_error(line: bytes, said: str) -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.decode_client(line)
    assert said in err.value.message
    assert "\n" not in err.value.message and len(err.value.message) < 400


def test_agent_side_shapes_are_checked() -> None:
    for line, said in (
        (b'{"type": "aggregate", "action": "stacks", "rows": [{"pid": 1, "func": "f", "count": 1}]}', "needs frames"),
        (b'{"type": "aggregate", "action": "count", "rows": [{"pid": 1, "func": "f", "calls": 1}]}', "'calls'"),
        (b'{"type": "event", "pid": 1}', "pid and func, or text"),
        (b'{"type": "event", "pid": 1, "func": "f", "args": ["1"]}', "not a hex number"),
        (b'{"type": "end", "code": 256, "reason": ""}', "outside 0..255"),
        (b'{"type": "started", "pids": [0], "legend": []}', "outside 1.."),
    ):
        with pytest.raises(p.ProtocolError) as err:
            p.decode_agent(line)
        assert said in err.value.message


def test_a_big_aggregate_is_split_under_the_line_limit() -> None:
    frames = tuple(f"frame_{i:04d}_" + "x" * 2000 for i in range(100))
    rows = tuple(p.Row(41, "hello", calls=i + 1, frames=frames) for i in range(40))  # ~8 MB of rows
    lines = p.encode_all(p.Aggregate("stacks", rows))
    assert len(lines) > 1 and all(len(line) <= p.MAX_LINE + 1 for line in lines)
    back = [p.decode_agent(line) for line in lines]
    assert [r for a in back if isinstance(a, p.Aggregate) for r in a.rows] == list(rows)


def test_version_mismatch_is_one_line_naming_both() -> None:
    assert p.version_mismatch("1.2.0", "1.2.0") is None
    said = p.version_mismatch("1.2.0", "1.3.0", "node-2")
    assert said is not None and "1.2.0" in said and "1.3.0" in said and "node-2" in said and "\n" not in said


def test_labelled_sets_the_node_of_events_and_rows() -> None:
    event = p.labelled(p.Event(1, "f", args=()), "node-2")
    assert isinstance(event, p.Event) and event.node == "node-2"
    agg = p.labelled(p.Aggregate("count", (p.Row(1, "f", calls=1), p.Row(2, "f", calls=2))), "node-2")
    assert isinstance(agg, p.Aggregate) and {r.node for r in agg.rows} == {"node-2"}
    assert p.labelled(p.Ping(), "node-2") == p.Ping()


def test_deadline() -> None:
    assert p.deadline(5.0) == 15.0
    assert p.deadline(None) == 3600.0
