"""--action count, args and latency print programs that run and report what they say."""

from __future__ import annotations

import re
import shlex

import pytest

from ctrace.bpftrace import actions
from ctrace.bpftrace.dialect import Dialect
from tests.conftest import Bpftrace, Built, Processes, ctrace, program_warnings

pytestmark = pytest.mark.bpftrace


def run_action(target: str, func: str, action: str, bt: Bpftrace) -> tuple[str, str]:
    """The printed command, and what --run (with the same --bpftrace) printed running it."""
    shell = ctrace("target", target, "--func", func, "--action", action, "-q", *bt.args).out.strip()
    assert shlex.split(shell)[0] == bt.path  # --run starts the bpftrace the program was written for
    # --duration counts from the start of bpftrace, whose compile and attach take seconds on a
    # busy machine: 4 s leaves room for the five calls the tests want.
    res = ctrace("target", target, "--func", func, "--action", action, "--run", "--duration", "4", *bt.args)
    assert res.code == 0, res.err
    assert not program_warnings(res.err, shlex.split(shell)), res.err
    return shell, res.out


def labelled(out: str, pid: int, label: str) -> list[dict[str, str]]:
    """``pid=N label name=value ...`` lines of ``pid``, as dicts of the named values."""
    rows = []
    for line in out.splitlines():
        head, _, rest = line.partition(f" {label} ")
        if head == f"pid={pid}":
            rows.append(dict(field.split("=", 1) for field in rest.split()))
    return rows


def test_count_counts_per_pid(built: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(built["stack-unwind"])
    shell, out = run_action(f"pid:{proc.pid}", "func_c", "count", bpftrace)
    assert '@calls[pid, "func_c"] = count();' in shlex.split(shell)[-1]
    (count,) = re.findall(rf"@calls\[{proc.pid}, func_c\]: (\d+)", out)
    assert int(count) >= 5  # ten calls a second, for most of four seconds


def test_args_prints_six_arguments(built: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(built["acme"])
    _, out = run_action(f"pid:{proc.pid}", "handshake", "args", bpftrace)
    rows = labelled(out, proc.pid, "handshake")
    assert rows and all(len(r) == 6 for r in rows)
    # handshake(this, round): arg0 is the object's address, arg1 the round (even: twice(i)).
    assert all(int(r["arg1"], 16) % 2 == 0 for r in rows)


def test_args_on_go_reads_go_registers(built: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(built["cilium-agent"])
    shell, out = run_action(f"pid:{proc.pid}", "regenerate", "args", bpftrace)
    assert 'reg("ax")' in shell
    rows = labelled(out, proc.pid, "regenerate")
    assert rows
    # regenerate(e *Endpoint, reason string): RBX/RCX hold the string; len("periodic") == 8.
    assert {r["arg2"] for r in rows} == {"0x8"}


@pytest.mark.parametrize(("binary", "func"), [("stack-unwind", "func_c"), ("cilium-agent", "regenerate")])
def test_latency_histogram(built: Built, processes: Processes, binary: str, func: str, bpftrace: Bpftrace) -> None:
    proc = processes.start(built[binary])
    shell, out = run_action(f"pid:{proc.pid}", func, "latency", bpftrace)
    program = shlex.split(shell)[-1]
    # Go stacks move, so its returns are uprobes on each RET, never a uretprobe.
    assert ("uretprobe:" in program) == (binary != "cilium-agent")
    counts = [int(n) for n in re.findall(r"^\[\S+, \S+\)\s+(\d+) \|", out, re.M)]
    assert sum(counts) >= 5, out


def test_latency_program_shape() -> None:
    block = actions.Block(("uprobe:/bin/x:f",), "pid == 42", "f", "c", exits=("uretprobe:/bin/x:f",))
    assert actions.latency(block) == (
        "uprobe:/bin/x:f /pid == 42/ { @start[tid] = nsecs; } "
        "uretprobe:/bin/x:f /pid == 42 && @start[tid]/ "
        '{ @usecs[pid, "f"] = hist((uint64)((int64)nsecs - (int64)@start[tid]) / (uint64)1000); delete(@start[tid]); } '
        "END { clear(@start); }"
    )


def test_latency_keys_go_by_goroutine_and_deletes_per_dialect() -> None:
    block = actions.Block(
        ("uprobe:/bin/g:f",),
        "",
        "f",
        "go",
        dialect=Dialect((0, 27, 1)),
        exits=("uprobe:/bin/g:0x10",),
        exit_kind="uprobe",
    )
    text = actions.latency(block)
    assert '@start[pid, reg("r14")] = nsecs;' in text
    assert '$gone = delete(@start[pid, reg("r14")]);' in text and "uprobe:/bin/g:0x10 /@start" in text


def test_programs_over_several_containers_name_each_event() -> None:
    """In a combined program over several owners (binding.owner) every key and printed line
    names the event's container; latency keeps one entry map per function."""
    owner = "@ctrace_names[@ctrace_mntns[curtask->nsproxy->mnt_ns->ns.inum]]"
    block = actions.Block(
        ("uprobe:/bin/x:f",), "", "f", "c", owner=owner, start="@start2", exits=("uretprobe:/bin/x:f",)
    )
    assert actions.count(block) == f'uprobe:/bin/x:f {{ @calls[pid, "f", {owner}] = count(); }}'
    args = actions.args(block)
    assert 'printf("pid=%d (%s) f arg0=0x%lx' in args and f", pid, {owner}, arg0," in args
    assert actions.stack(block) == f'uprobe:/bin/x:f {{ printf("pid=%d (%s) f%s\\n", pid, {owner}, ustack); }}'
    text = actions.latency(block)
    assert f'@usecs[pid, "f", {owner}] = hist(' in text and "@start2[tid] = nsecs;" in text
    assert text.endswith("END { clear(@start2); }") and "@start[" not in text
