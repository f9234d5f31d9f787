"""What bpftrace prints, as PROTOCOL.md's messages (agent/stream.py), on captured output of
ctrace's programs: the formats of 0.17, 0.23 and 0.27 (tests/test_run_json.py runs them live)."""

from __future__ import annotations

import io

from ctrace.agent import protocol as p
from ctrace.agent.stream import Labels, Stream, bucket


def stream(action: str | None, labels: dict[int, Labels] | None = None) -> tuple[Stream, io.StringIO]:
    out = io.StringIO()
    logged: list[str] = []
    s = Stream(out, action, {"f": "ns::f(int)"}, labels or {7: Labels("shop", "web-1", "app")}, ["PID 7 = x"])
    s.log = logged.append
    return s, out


def messages(out: io.StringIO) -> list[p.Message]:
    return [p.decode_agent(line) for line in out.getvalue().splitlines()]


def test_histogram_buckets() -> None:
    assert bucket("[8K, 16K)             13 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|") == (
        8192,
        16384,
        13,
    )
    assert bucket("[0]                    2 |@@                                                  |") == (0, 1, 2)
    assert bucket("[1]                    1 |@                                                   |") == (1, 2, 1)
    assert bucket("[2, 4)                 5 |@@@@@                                               |") == (2, 4, 5)
    assert bucket("[1M, 2M)               1 |@                                                   |") == (
        1 << 20,
        2 << 20,
        1,
    )
    assert bucket("@usecs[7]:") is None


def test_count_latency_and_args() -> None:
    s, out = stream("count")
    for line in ("Attaching 6 probes...", "", "@calls[7, f]: 14", '@calls[8, "f"]: 2'):
        s.line(line)
    s.finish()
    s.end(130)
    started, agg, end = messages(out)
    assert isinstance(started, p.Started) and started.pids == (7,) and started.legend == ("PID 7 = x",)
    assert isinstance(agg, p.Aggregate)
    # PID 8 (a child forked after attach): labelled as its parent's, the one target
    assert agg.rows == (
        p.Row(7, "ns::f(int)", calls=14, namespace="shop", pod="web-1", container="app"),
        p.Row(8, "ns::f(int)", calls=2, namespace="shop", pod="web-1", container="app"),
    )
    assert end == p.End(130, "stopped")

    s, out = stream("latency")
    for line in ("Attached 7 probes", "@usecs[7]:", "[4K, 8K)   1 |@  |", "[8K, 16K)  13 |@@@|", ""):
        s.line(line)
    s.finish()
    (_, agg) = messages(out)
    assert isinstance(agg, p.Aggregate) and agg.rows[0].buckets == ((4096, 8192, 1), (8192, 16384, 13))

    s, out = stream("args")
    s.line("pid=7 f arg0=0x1 arg1=0x2 arg2=0x0 arg3=0x0 arg4=0x0 arg5=0xff")
    s.line("pid=7 f retval=0x1")
    s.line("pid=7 f something else")  # not an event: to stderr, not the stream
    started, first, second = messages(out)
    assert isinstance(started, p.Started)  # an event says the probes are in
    assert isinstance(first, p.Event) and first.args == ("0x1", "0x2", "0x0", "0x0", "0x0", "0xff")
    assert isinstance(second, p.Event) and (second.args, second.retval) == (None, "0x1")


def test_stack_events_end_at_the_blank_line_or_the_next_event() -> None:
    s, out = stream("stack")
    for line in ("Attaching 2 probes...", "pid=7 f", "        f+0", "        main+9", "", "pid=7 f", "        f+0"):
        s.line(line)
    s.finish()
    msgs = messages(out)
    events = [m for m in msgs if isinstance(m, p.Event)]
    assert [e.frames for e in events] == [("f+0", "main+9"), ("f+0",)]
    assert all(e.func == "ns::f(int)" and e.pod == "web-1" for e in events)


def test_a_users_program_is_text_and_bpftrace_errors_reach_the_end() -> None:
    s, out = stream(None)
    s.line("hello from BEGIN")
    s.line("")
    s.error_line("Attached 3 probes")
    s.error_line("stdin:1:10-20: ERROR: system() is an unsafe function being used in safe mode")
    s.end(1)
    started, text, end = messages(out)
    assert isinstance(started, p.Started) and text == p.Event(text="hello from BEGIN")
    assert end == p.End(
        1, "bpftrace exited with status 1: stdin:1:10-20: ERROR: system() is an unsafe function being used in safe mode"
    )


def test_programs_over_several_containers_and_functions() -> None:
    """plan/combined.py's keys and lines: the function in the latency key, the event's
    container (binding.owner) after it, in parentheses on a printed line."""
    two = {7: Labels(container="web-1"), 9: Labels(container="web-2")}
    s, out = stream("count", two)
    for line in (
        "Attached 3 probes",
        "@calls[7, f, docker container web-1]: 5",
        "@calls[9, f, docker container web-2]: 3",
    ):
        s.line(line)
    s.finish()
    (_, agg) = messages(out)
    assert isinstance(agg, p.Aggregate)
    assert [(r.pid, r.func, r.calls, r.container) for r in agg.rows] == [
        (7, "ns::f(int)", 5, "web-1"),
        (9, "ns::f(int)", 3, "web-2"),
    ]

    s, out = stream("latency", two)
    lines = ("@usecs[7, f, docker container web-1]:", "[8K, 16K)  5 |@@@|", "", "@usecs[9, g]:", "[1]  2 |@@|", "")
    for line in ("Attached 5 probes", *lines):
        s.line(line)
    s.finish()
    (_, agg) = messages(out)
    assert isinstance(agg, p.Aggregate)
    assert [(r.pid, r.func, r.buckets) for r in agg.rows] == [
        (7, "ns::f(int)", ((8192, 16384, 5),)),
        (9, "g", ((1, 2, 2),)),  # a label the program does not name: as printed
    ]

    s, out = stream("args", two)
    s.line("pid=9 (docker container web-2 pod shop/web-2) f arg0=0x21 arg1=0x0 arg2=0x0 arg3=0x0 arg4=0x0 arg5=0x0")
    (_, event) = messages(out)
    assert isinstance(event, p.Event) and (event.pid, event.func, event.args[:1] if event.args else None) == (
        9,
        "ns::f(int)",
        ("0x21",),
    )

    s, out = stream("stack", two)
    for line in ("pid=7 (docker container web-1)", "        f+0", ""):
        s.line(line)
    s.finish()
    (_, event) = messages(out)
    assert isinstance(event, p.Event) and (event.pid, event.frames, event.container) == (7, ("f+0",), "web-1")
