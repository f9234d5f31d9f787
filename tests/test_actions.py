"""--action count, args and latency print programs that run and report what they say."""

from __future__ import annotations

import re
import shlex

import pytest

from ctrace import emit
from tests.conftest import Built, Processes, ctrace, need_bpftrace

pytestmark = pytest.mark.bpftrace


def run_action(target: str, func: str, action: str) -> tuple[str, str]:
    shell = ctrace("target", target, "--func", func, "--action", action, "-q").out.strip()
    res = ctrace("target", target, "--func", func, "--action", action, "--run", "--duration", "2")
    assert res.code == 0, res.err
    return shell, res.out


def test_count_counts_per_pid(built: Built, processes: Processes) -> None:
    need_bpftrace()
    proc = processes.start(built["stack-unwind"])
    shell, out = run_action(f"pid:{proc.pid}", "func_c", "count")
    assert "@calls[probe, pid] = count();" in shlex.split(shell)[-1]
    (count,) = re.findall(rf"@calls\[uprobe:\S+:func_c, {proc.pid}\]: (\d+)", out)
    assert int(count) >= 5  # ten calls a second, for two seconds


def test_args_prints_six_arguments(built: Built, processes: Processes) -> None:
    need_bpftrace()
    proc = processes.start(built["acme"])
    _, out = run_action(f"pid:{proc.pid}", "handshake", "args")
    rows = [line.split() for line in out.splitlines() if line.startswith(f"{proc.pid} uprobe:")]
    assert rows and all(len(r) == 8 for r in rows)
    # handshake(this, round): arg0 is the object's address, arg1 the round (even: twice(i)).
    assert all(int(r[3], 16) % 2 == 0 for r in rows)


def test_args_on_go_reads_go_registers(built: Built, processes: Processes) -> None:
    need_bpftrace()
    proc = processes.start(built["cilium-agent"])
    shell, out = run_action(f"pid:{proc.pid}", "regenerate", "args")
    assert 'reg("ax")' in shell
    rows = [line.split() for line in out.splitlines() if line.startswith(f"{proc.pid} uprobe:")]
    assert rows
    # regenerate(e *Endpoint, reason string): RBX/RCX hold the string; len("periodic") == 8.
    assert {r[4] for r in rows} == {"8"}


@pytest.mark.parametrize(("binary", "func"), [("stack-unwind", "func_c"), ("cilium-agent", "regenerate")])
def test_latency_histogram(built: Built, processes: Processes, binary: str, func: str) -> None:
    need_bpftrace()
    proc = processes.start(built[binary])
    shell, out = run_action(f"pid:{proc.pid}", func, "latency")
    program = shlex.split(shell)[-1]
    # Go stacks move, so its returns are uprobes on each RET, never a uretprobe.
    assert ("uretprobe:" in program) == (binary != "cilium-agent")
    counts = [int(n) for n in re.findall(r"^\[\S+, \S+\)\s+(\d+) \|", out, re.M)]
    assert sum(counts) >= 5, out


def test_latency_program_shape() -> None:
    entry = [emit.Site("f", "name")]
    text = emit.latency_program("/bin/x", entry, [emit.Site("0x10", "address", True)], "uprobe", 42)
    assert text == (
        "uprobe:/bin/x:f /pid == 42/ { @start[tid] = nsecs; } "
        "uprobe:/bin/x:0x10 /pid == 42 && @start[tid]/ "
        "{ @usecs = hist((nsecs - @start[tid]) / 1000); delete(@start[tid]); } END { clear(@start); }"
    )
