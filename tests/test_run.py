"""--run: the chosen command runs, --duration stops it, Ctrl-C exits 130 and leaves no probe behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctrace.bpftrace.dialect import ATTACHED
from tests.conftest import ROOT, Bpftrace, Built, Processes, ctrace

pytestmark = pytest.mark.bpftrace
UPROBE_EVENTS = Path("/sys/kernel/tracing/uprobe_events")


def uprobe_events() -> str:
    return UPROBE_EVENTS.read_text() if UPROBE_EVENTS.exists() else ""


def test_run_with_duration_shows_stacks(built: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(built["stack-unwind"])
    before = uprobe_events()
    start = time.monotonic()
    args = ("--func", "func_c", "--action", "stack", "--run", "--duration", "2", *bpftrace.args)
    res = ctrace("target", f"pid:{proc.pid}", *args)
    took = time.monotonic() - start
    assert res.code == 0, res.err
    assert res.out.count("func_c+0") >= 3  # the program calls it ten times a second
    assert 2 <= took < 15
    assert uprobe_events() == before


def test_ctrl_c_exits_130_and_detaches(built: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(built["hello"])
    before = uprobe_events()
    run = subprocess.Popen(
        [sys.executable, "-m", "ctrace", "target", f"pid:{proc.pid}", "--func", "hello", "--action", "stack", "--run"]
        + list(bpftrace.args),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert run.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "hello+0" in run.stdout.readline():
            break
    else:
        pytest.fail("the probe never fired")
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    assert run.wait(timeout=20) == 130
    assert uprobe_events() == before
    # Nothing of the session is left: another version's bpftrace runs as ld-linux, not "bpftrace".
    left = subprocess.run(["pgrep", "-s", str(run.pid)], capture_output=True, text=True)
    assert left.stdout == ""


def test_several_functions_run_as_one_program_keyed_by_function(
    built: Built, processes: Processes, bpftrace: Bpftrace
) -> None:
    proc = processes.start(built["stack-unwind"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "func_*", "--run", "--duration", "3", *bpftrace.args)
    assert res.code == 0, res.err
    assert len(ATTACHED.findall(res.out + res.err)) == 1  # one bpftrace, one program
    # Each function's stacks counted apart, labelled by function and PID; func_a calls func_b calls func_c.
    heads = [line.split() for line in res.out.splitlines() if line.endswith(f"PID {proc.pid} (stack-unwind, host)")]
    calls = {head[1]: int(head[0]) for head in heads}
    assert set(calls) == {"func_a", "func_b", "func_c"}
    # As many calls of each, but for those made while bpftrace attached the probes one by one.
    assert min(calls.values()) >= 10 and max(calls.values()) - min(calls.values()) <= 5
