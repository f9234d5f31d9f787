"""--run: the chosen command runs, --duration stops it, Ctrl-C exits 130 and leaves no probe behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Built, Processes, ctrace, need_bpftrace

pytestmark = pytest.mark.bpftrace
UPROBE_EVENTS = Path("/sys/kernel/tracing/uprobe_events")


def uprobe_events() -> str:
    return UPROBE_EVENTS.read_text() if UPROBE_EVENTS.exists() else ""


@pytest.fixture(autouse=True)
def _bpftrace() -> None:
    need_bpftrace()


def test_run_with_duration_shows_stacks(built: Built, processes: Processes) -> None:
    proc = processes.start(built["stack-unwind"])
    before = uprobe_events()
    start = time.monotonic()
    res = ctrace("target", f"pid:{proc.pid}", "--func", "func_c", "--action", "stack", "--run", "--duration", "2")
    took = time.monotonic() - start
    assert res.code == 0, res.err
    assert res.out.count("func_c+0") >= 3  # the program calls it ten times a second
    assert 2 <= took < 15
    assert uprobe_events() == before


def test_ctrl_c_exits_130_and_detaches(built: Built, processes: Processes) -> None:
    proc = processes.start(built["hello"])
    before = uprobe_events()
    run = subprocess.Popen(
        [sys.executable, "-m", "ctrace", "target", f"pid:{proc.pid}", "--func", "hello", "--action", "stack", "--run"],
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
    bpftrace_left = subprocess.run(["pgrep", "-s", str(run.pid), "bpftrace"], capture_output=True, text=True)
    assert bpftrace_left.stdout == ""


def test_several_probes_need_all_then_run_as_one_program(built: Built, processes: Processes) -> None:
    proc = processes.start(built["stack-unwind"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "func_b", "--func", "func_c", "--run", "--duration", "1")
    assert res.code == 2 and "--all" in res.err
    res = ctrace(
        "target", f"pid:{proc.pid}", "--func", "func_b", "--func", "func_c", "--run", "--all", "--duration", "2"
    )
    assert res.code == 0, res.err
    assert "func_b+0" in res.out and "func_c+0" in res.out
