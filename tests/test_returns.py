"""Go-safe returns: --probe return fires once per return; uretprobe refused on Go."""

from __future__ import annotations

import os
import re
import shlex
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ctrace import elf
from ctrace.bpftrace import actions, emit, sites
from ctrace.bpftrace.dialect import OFFSET_PROBES_SINCE, parse_version
from ctrace.elf import code
from ctrace.elf.reader import open_elf
from tests.conftest import Bpftrace, Built, Processes, Session, ctrace, program_warnings, run
from tests.symfix import (
    CALLS,
    one_probe,
    sym_fixture,  # noqa: F401 - provides the "sym" fixture
)


def count_returns(
    processes: Processes, binary: Path, func: str, probe_type: str, bpftrace: Bpftrace
) -> tuple[dict[str, Any], int]:
    """Start ``binary``, attach ctrace's command, release the CALLS calls, count what fired."""
    proc = processes.start(binary)
    probe = one_probe(f"pid:{proc.pid}", "--func", func, "--probe", probe_type, *bpftrace.args)
    bpf = Session(probe["argv"])
    assert bpf.wait_attached(), bpf.stop()
    # bpftrace says it attached as it starts attaching; on a loaded 2-core machine the
    # last uprobe can land a second or more later.
    time.sleep(2.5)
    os.kill(proc.pid, signal.SIGUSR1)
    time.sleep(1.5)  # the calls, and bpftrace printing them
    out, err = bpf.stop()
    os.kill(proc.pid, signal.SIGUSR1)  # the process ends after bpftrace, which names its frames
    proc.wait(timeout=10)
    assert not program_warnings(err, probe["argv"]), err
    # Each event is a "pid=N label" line and its frames (actions.stack).
    stacks = [block for block in out.split("\n\n") if re.search(rf"^pid={proc.pid} ", block, re.M)]
    return probe, len(stacks)


@pytest.mark.bpftrace
@pytest.mark.parametrize(
    ("binary", "func"),
    [
        ("gocount", "classify"),
        ("gocount-stripped", "classify"),
        ("counted-mini", "classify"),
        # bcc finds the debuglink file next to /proc/PID/root/..., not next to /proc/PID/exe
        ("counted-linked", "classify"),
    ],
)
def test_probe_return_fires_once_per_return(
    sym: Built, processes: Processes, binary: str, func: str, bpftrace: Bpftrace
) -> None:
    probe, fired = count_returns(processes, sym[binary], func, "return", bpftrace)
    assert probe["probe"] == "return" and probe["argv"][-1].count("uprobe:") >= 2
    if binary == "counted-linked" and (parse_version(bpftrace.version) or (0, 0, 0)) >= OFFSET_PROBES_SINCE:
        # bpftrace reads the debug file next to /proc/PID/root/...: the RETs by vaddr, checked.
        assert probe["form"] == "proc-root" and "--unsafe" not in probe["argv"], probe
    elif binary == "counted-linked":
        # Not by vaddr (0.17 cannot check inside a function), and a file offset is
        # covered by the debug file's symbols: only /proc/PID/exe, where bcc finds none.
        assert probe["form"] == "exe" and not probe["alternatives"], probe
    assert fired == CALLS, probe["shell"]


@pytest.mark.bpftrace
def test_uretprobe_still_works_for_c(sym: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    probe, fired = count_returns(processes, sym["counted"], "classify", "uretprobe", bpftrace)
    assert " uretprobe:" in probe["argv"][-1] and fired == CALLS


def test_uretprobe_on_go_is_refused(sym: Built, processes: Processes) -> None:
    proc = processes.start(sym["gocount"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "classify", "--probe", "uretprobe")
    assert res.code == 2 and res.out == ""
    assert res.err.startswith("ctrace: error: --probe uretprobe on Go binary")
    assert "moves (copies) goroutine stacks" in res.err and "hint: use --probe return" in res.err


@pytest.mark.bpftrace
def test_return_on_unstripped_pie_c(sym: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    """Unstripped PIE C: a RET's file offset is also an address inside classify. A bpftrace
    that checks sym+N probes takes classify+N; one that cannot (0.17) would misread the
    offset, so ctrace refuses with a hint."""
    if (parse_version(bpftrace.version) or (0, 0, 0)) >= OFFSET_PROBES_SINCE:
        probe, fired = count_returns(processes, sym["counted"], "classify", "return", bpftrace)
        assert "classify+" in probe["argv"][-1] and "--unsafe" not in probe["argv"]
        assert fired == CALLS
        return
    proc = processes.start(sym["counted"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "classify", "--probe", "return", *bpftrace.args)
    assert res.code == 1 and res.out == ""
    assert "cannot probe the RET" in res.err and "hint: use --probe uretprobe" in res.err


def test_ret_addresses_match_objdump(sym: Built) -> None:
    path = str(sym["gocount"])
    (fn,) = [s for s in elf.inspect(path).symbols if s.name == "main.classify"]
    text = run(
        ["objdump", "-d", f"--start-address={fn.address}", f"--stop-address={fn.address + fn.size}", path]
    ).stdout
    want = [int(ln.split(":")[0], 16) for ln in text.splitlines() if ln.rstrip().endswith("ret")]
    assert code.returns(open_elf(path), fn) == want and len(want) >= 2


def test_return_program_lists_every_site() -> None:
    rets = [sites.offset_site(0x10, "why"), sites.offset_site(0x20, "why")]
    block = actions.Block(tuple(sites.points("/proc/7/exe", rets)), "pid == 7", "f", "go", "return")
    cmd = emit.command("exe", 7, actions.stack(block), unsafe=True)
    assert cmd.argv == (
        "bpftrace",
        "--unsafe",
        "-p",
        "7",
        "-e",
        'uprobe:/proc/7/exe:0x10, uprobe:/proc/7/exe:0x20 /pid == 7/ { printf("pid=%d f%s\\n", pid, ustack); }',
    )
    assert tuple(shlex.split(cmd.shell)) == cmd.argv


def test_spans_cover_and_entries() -> None:
    from ctrace.bpftrace.sites import Spans
    from ctrace.model import Symbol

    spans = Spans(
        [Symbol("a", 0x100, 0x80, "symtab"), Symbol("b", 0x120, 0x10, "symtab"), Symbol("z", 0x400, 0, "dynsym")]
    )
    assert spans.covers(0x100) and spans.covers(0x17F) and spans.covers(0x125)
    assert not spans.covers(0xFF) and not spans.covers(0x180) and not spans.covers(0x401)
    assert spans.covers(0x400) and spans.entry == {0x100, 0x120, 0x400}


def test_spans_see_only_the_sources_bcc_reads() -> None:
    from ctrace.bpftrace.sites import Spans
    from ctrace.model import Symbol

    symbols = [Symbol("a", 0x100, 0x80, "symtab"), Symbol("g", 0x200, 0x40, "pclntab")]
    spans = Spans(symbols, frozenset({"symtab", "dynsym"}))
    assert spans.covers(0x110) and not spans.covers(0x210)
    assert spans.entry == {0x100}
