"""``--run -o json``: PROTOCOL.md's lines for every action, with the right numbers in them.

counted.c calls classify(0..6) exactly seven times on SIGUSR1 (returning 0, 1, 0, 1, 0,
1, 0), so counts, arguments, return values and stacks are known exactly; stack-unwind's
func_c sleeps 10 ms a call, so its latency is known to the bucket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import pytest

from ctrace.agent import protocol as p
from tests.conftest import ROOT, Bpftrace, Built, Processes
from tests.symfix import CALLS, sym_fixture  # noqa: F401 - provides the "sym" fixture

pytestmark = pytest.mark.bpftrace


class Run:
    """``ctrace target ... --run -o json`` in its own process group, its lines decoded as they come."""

    def __init__(self, *args: str) -> None:
        argv = [sys.executable, "-m", "ctrace", "target", *args, "--run", "-o", "json"]
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self.messages: list[p.Message] = []

    def until(self, test: type[p.Message], count: int = 1, timeout: float = 60) -> list[p.Message]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while sum(isinstance(m, test) for m in self.messages) < count:
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"no {count} {test.__name__}: {self.messages}; {self.err()}")
            self.messages.append(p.decode_agent(line))  # every line is one message of the protocol
        return self.messages

    def stop(self) -> list[p.Message]:
        """Ctrl-C (the whole group, as a terminal sends it), then every line to the end."""
        os.killpg(self.proc.pid, signal.SIGINT)
        out, _ = self.proc.communicate(timeout=30)
        self.messages += [p.decode_agent(line) for line in out.splitlines()]
        return self.messages

    def err(self) -> str:
        return self.proc.stderr.read().decode() if self.proc.stderr and self.proc.poll() is not None else ""


def seven_calls(proc: subprocess.Popen[bytes], args: Sequence[str], bt: Bpftrace) -> Run:
    run = Run(f"pid:{proc.pid}", "--func", "classify", *args, *bt.args)
    started = run.until(p.Started)[-1]
    assert isinstance(started, p.Started) and started.pids == (proc.pid,)
    # bpftrace 0.17 and 0.23 say "Attaching N probes..." as they begin (0.27 "Attached" when done):
    # on a loaded 2-core machine the last uprobe can land a second or more later (test_returns.py).
    time.sleep(2.5)
    os.kill(proc.pid, signal.SIGUSR1)  # classify(0) .. classify(6)
    return run


def only(messages: list[p.Message], kind: type[p.Message]) -> list[p.Message]:
    return [m for m in messages if isinstance(m, kind)]


def test_count_is_exact(sym: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(sym["counted"])
    run = seven_calls(proc, ("--action", "count"), bpftrace)
    time.sleep(1)
    msgs = run.stop()
    assert msgs[-1] == p.End(p.STOPPED, "stopped")
    assert only(msgs, p.Aggregate) == [p.Aggregate("count", (p.Row(proc.pid, "classify", calls=CALLS),))]
    assert isinstance(msgs[0], p.Started) and len(only(msgs, p.Started)) == 1


def test_args_are_each_call_in_order(sym: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(sym["counted"])
    run = seven_calls(proc, ("--action", "args"), bpftrace)
    run.until(p.Event, CALLS)
    events = only(run.stop(), p.Event)
    assert [e.args[0] for e in events if isinstance(e, p.Event) and e.args] == [hex(i) for i in range(CALLS)]
    assert {(e.pid, e.func, e.retval) for e in events if isinstance(e, p.Event)} == {(proc.pid, "classify", None)}


def test_return_values(sym: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(sym["counted"])
    run = seven_calls(proc, ("--action", "args", "--probe", "uretprobe"), bpftrace)
    run.until(p.Event, CALLS)
    events = only(run.stop(), p.Event)
    assert [e.retval for e in events if isinstance(e, p.Event)] == ["0x0", "0x1"] * 3 + ["0x0"]


def test_stack_events_and_stacks_aggregate(sym: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(sym["counted"])
    run = seven_calls(proc, ("--action", "stack"), bpftrace)
    run.until(p.Event, CALLS)
    events = [e for e in only(run.stop(), p.Event) if isinstance(e, p.Event)]
    assert len(events) == CALLS
    assert all(e.frames and e.frames[0].startswith("classify") and "main" in e.frames[1] for e in events)

    proc = processes.start(sym["counted"])
    run = seven_calls(proc, ("--action", "stacks"), bpftrace)
    time.sleep(1)
    (agg,) = only(run.stop(), p.Aggregate)
    assert isinstance(agg, p.Aggregate) and len(agg.rows) == 1
    row = agg.rows[0]
    assert (row.pid, row.func, row.calls) == (proc.pid, "classify", CALLS)
    assert row.frames is not None and row.frames[:2] == ("classify", "main")


def test_latency_of_a_ten_millisecond_call(built: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(built["stack-unwind"])
    run = Run(f"pid:{proc.pid}", "--func", "func_c", "--action", "latency", "--duration", "4", *bpftrace.args)
    run.until(p.End, timeout=60)
    assert run.messages[-1] == p.End(p.OK, "ended")
    (agg,) = only(run.messages, p.Aggregate)
    assert isinstance(agg, p.Aggregate)
    (row,) = agg.rows
    assert (row.pid, row.func) == (proc.pid, "func_c") and row.buckets
    # usleep(10000): no call shorter than 8,192 us (the bucket of 10 ms), none near 65 ms.
    assert all(low >= 8192 and high <= 65536 for low, high, _ in row.buckets), row.buckets
    assert sum(n for _, _, n in row.buckets) >= 5  # ten calls a second for most of four seconds


def test_a_traced_process_that_exits_ends_with_code_1(sym: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(sym["counted"])
    run = seven_calls(proc, ("--action", "count"), bpftrace)
    time.sleep(1)
    os.kill(proc.pid, signal.SIGUSR1)  # its second SIGUSR1: it exits
    proc.wait()
    run.until(p.End, timeout=30)
    end = run.messages[-1]
    assert isinstance(end, p.End) and end.code == 1 and f"process {proc.pid}" in end.reason
    assert only(run.messages, p.Aggregate) == [p.Aggregate("count", (p.Row(proc.pid, "classify", calls=CALLS),))]
