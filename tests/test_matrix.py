"""Every combination is valid or refused, on every bpftrace: action (stack, count, args,
latency) x probe (uprobe, uretprobe, return) x language (C, C++, Rust, Go, stripped Go)
x attach (by name, by address) either prints a program that compiles, fires, measures
what it says and makes bpftrace print no warning but the machine's (dialect.py), or is
refused with one line and a hint.

Fast: ctrace plans each cell in this process; the programs of one bpftrace version are
run together, two bpftrace processes per version (the cells that need --unsafe apart,
so --unsafe and its warning are allowed only where ctrace printed them). Each cell's
maps and printf lines are renamed and tagged so its events are told apart.
Set CTRACE_MATRIX_REPORT=PATH to write the table (JSON, and PATH.md).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ctrace import cli
from ctrace.bpftrace.dialect import EXIT_DEFECTS
from tests.conftest import SRC, Bpftrace, Built, Processes, Session, ctrace, need, program_warnings, run

pytestmark = pytest.mark.bpftrace
ACTIONS = ("stack", "count", "args", "latency")
PROBES = ("uprobe", "uretprobe", "return")
# A name bpftrace cannot be given (a quote), so ctrace attaches by address; C++ instead
# has two functions of one name, the way such a name comes about.
ADDRESSED = 'wo"rk'
SLEEP_BUCKET = "[16K, 32K)"  # every fixture's function sleeps ~20 ms: its latency in microseconds


@dataclass(frozen=True)
class Subject:
    """One binary of the matrix: its language, how ctrace must attach, what --func names."""

    name: str
    language: str
    attach: str  # "name" or "address"
    func: str
    arg0: int  # the first argument at the entry
    retval: int  # what the function returns


SUBJECTS = (
    Subject("c", "c", "name", "work", 7, 21),
    Subject("c-addr", "c", "address", ADDRESSED, 7, 21),
    Subject("cpp", "c++", "name", "matrix::work", 7, 21),
    Subject("cpp-addr", "c++", "address", "(anonymous namespace)::work", 7, 21),
    Subject("rust", "rust", "name", "work::work", 7, 21),
    Subject("rust-addr", "rust", "address", ADDRESSED, 7, 21),
    Subject("go", "go", "name", "main.block", 20_000_000, 42),
    Subject("go-stripped", "go", "address", "main.block", 20_000_000, 42),
)


def _rename(src: Path, out: Path, name: str) -> None:
    run(["objcopy", f"--redefine-sym={name}={ADDRESSED}", src, out])


def _mangled(path: Path, part: str) -> str:
    names = run(["nm", "--defined-only", path]).stdout.split()
    return next(n for n in names if part in n)


@pytest.fixture(scope="module")
def subjects(built: Built) -> dict[str, Path]:
    for tool in ("gcc", "g++", "go", "objcopy", "rustc"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (make test installs it)")
    src, out = SRC / "matrix", built.dir / "matrix"
    out.mkdir(exist_ok=True)
    cc = ["-O0", "-fno-omit-frame-pointer"]
    run(["gcc", *cc, "-o", out / "c", src / "work.c"])
    run(["g++", *cc, "-o", out / "cpp", src / "work.cpp"])
    run(["rustc", "-C", "opt-level=1", "-C", "force-frame-pointers=yes", "-o", out / "rust", src / "work.rs"])
    _rename(out / "c", out / "c-addr", "work")
    run(["g++", *cc, "-o", out / "cpp-addr", src / "dup.cpp", src / "dup2.cpp"])
    _rename(out / "rust", out / "rust-addr", _mangled(out / "rust", "4work4work17h"))
    env = {**os.environ, "GOCACHE": str(built.dir / "gocache"), "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    run(["go", "build", "-o", out / "go", "."], cwd=src / "goblock", env=env)
    run(["go", "build", "-ldflags=-s -w", "-o", out / "go-stripped", "."], cwd=src / "goblock", env=env)
    return {s.name: out / s.name for s in SUBJECTS}


@pytest.fixture(scope="module")
def running(subjects: dict[str, Path], processes: Processes) -> dict[str, int]:
    return {name: processes.start(path).pid for name, path in subjects.items()}


@dataclass
class Cell:
    subject: Subject
    action: str
    probe: str
    code: int = 0
    probe_json: dict[str, Any] = field(default_factory=dict)
    err: str = ""
    fired: bool = False
    detail: str = ""

    @property
    def key(self) -> str:
        return f"{self.action}/{self.probe}/{self.subject.name}"


def plan_cell(cell: Cell, pid: int, bt: Bpftrace) -> None:
    """ctrace's own CLI, in this process (a child each would cost a second per cell)."""
    args = ["target", f"pid:{pid}", "--func", cell.subject.func, "--action", cell.action, "--probe", cell.probe]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        cell.code = cli.main([*args, *bt.args, "-o", "json"], out=out)
    cell.err = err.getvalue()
    if cell.code == 0:
        (target,) = json.loads(out.getvalue())["targets"]
        # One probe, but for C++'s two functions of one name (one probe each, alike).
        assert len(target["probes"]) == (2 if cell.subject.name == "cpp-addr" else 1), cell.key
        cell.probe_json = target["probes"][0]
    else:
        assert out.getvalue() == "", cell.key


_BLOCK = re.compile(r"\s*([^{}]+?)\s*\{ ?([^{}]*?) ?\}")
_MAPS = ("@start", "@usecs", "@calls")


def blocks(program: str) -> list[tuple[str, str]]:
    """(head, body) of each block of a program ctrace printed (no braces nest in them)."""
    found = [(m.group(1), m.group(2)) for m in _BLOCK.finditer(program)]
    assert "".join(f"{h} {{ {b} }}" for h, b in found).replace(" ", "") == program.replace(" ", ""), program
    return found


def merge(cells: list[tuple[int, Cell]]) -> str:
    """The cells' programs as one: one BEGIN and one END, the binding's blocks once, each
    cell's own maps renamed and its printf lines tagged ``cN``."""
    begin: dict[str, None] = {}
    end: dict[str, None] = {}
    shared: dict[str, None] = {}
    config: dict[str, None] = {}  # the dialect's config block: once, first, as bpftrace wants it
    own: list[str] = []
    for n, cell in cells:
        for head, body in blocks(cell.probe_json["argv"][-1]):
            for m in _MAPS:  # in the body and in the predicate
                body = re.sub(rf"{m}\b", f"{m}_c{n}", body)
                head = re.sub(rf"{m}\b", f"{m}_c{n}", head)
            body = body.replace('printf("', f'printf("c{n} ')
            if head.startswith("config"):
                config[f"{head} {{ {body} }}"] = None
            elif head in ("BEGIN", "END"):
                for stmt in re.findall(r"[^;]+;", body):
                    (begin if head == "BEGIN" else end)[stmt.strip()] = None
            elif head.startswith("tracepoint:"):
                shared[f"{head} {{ {body} }}"] = None
            else:
                own.append(f"{head} {{ {body} }}")
    parts = [*config, f"BEGIN {{ {' '.join(begin)} }}", *shared, *own, f"END {{ {' '.join(end)} }}"]
    return " ".join(parts)


def _hist(out: str, name: str) -> list[tuple[str, int]]:
    """The buckets of the histogram map ``name`` (any key) in bpftrace's output."""
    rows: list[tuple[str, int]] = []
    inside = False
    for line in out.splitlines():
        if line.startswith(f"{name}["):
            inside = True
            continue
        if inside and (m := re.match(r"^(\[[^)\]]+[)\]])\s+(\d+) \|", line)):
            rows.append((m.group(1), int(m.group(2))))
        elif inside and not line.strip():
            inside = False
    return rows


def median_bucket(rows: list[tuple[str, int]]) -> str:
    expanded = [i for i, (_, n) in enumerate(rows) for _ in range(n)]
    return rows[int(statistics.median_low(expanded))][0] if expanded else "-"


def check_fired(n: int, cell: Cell, out: str, pid: int) -> None:
    s = cell.subject
    tagged = [ln for ln in out.splitlines() if ln.startswith(f"c{n} ")]
    if cell.action == "stack":
        cell.fired = bool(tagged)
    elif cell.action == "count":
        counts = re.findall(rf"^@calls_c{n}\[{pid}, [^\]]+\]: (\d+)", out, re.M)
        cell.fired = bool(counts) and int(counts[0]) > 0
    elif cell.action == "args":
        want = f"arg0=0x{s.arg0:x}" if cell.probe == "uprobe" else f"retval=0x{s.retval:x}"
        mine = [ln for ln in tagged if ln.startswith(f"c{n} pid={pid} ")]
        cell.fired = bool(mine) and all(want in ln.split() for ln in mine)
        cell.detail = mine[0] if mine else ""
    else:
        cell.detail = median_bucket(_hist(out, f"@usecs_c{n}"))
        cell.fired = cell.detail == SLEEP_BUCKET


REPORT: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, dict[str, Any]]]:
    yield REPORT
    path = os.environ.get("CTRACE_MATRIX_REPORT")
    if path and REPORT:
        Path(path).write_text(json.dumps(REPORT, indent=1, ensure_ascii=False) + "\n")
        Path(path + ".md").write_text(markdown(REPORT))


def markdown(data: dict[str, dict[str, Any]]) -> str:
    versions = sorted(data)
    rows = [
        ("cells valid (fire, right data)", "valid"),
        ("cells refused (one line + hint)", "refused"),
        ("cells wrong", "wrong"),
        ("warnings seen (not the machine's)", "warnings"),
        ("unsafe cells (their one warning allowed)", "unsafe"),
        ("groups run again (a map or END failed to load: 0.17, a busy machine)", "retries"),
        ("bpftrace's own errors at exit (dialect.EXIT_DEFECTS: 0.17)", "exit_defects"),
        ("Go latency median, matrix (8 goroutines, 20 ms sleep)", "go_latency"),
        ("C latency median, matrix (20 ms sleep)", "c_latency"),
        ("Go latency median, printed program (32 goroutines, GOMAXPROCS 4)", "go_latency_printed"),
        ("  the same keyed by thread (control: must be wrong)", "go_latency_by_thread"),
        ("C latency median, printed program", "c_latency_printed"),
    ]
    lines = ["| | " + " | ".join(f"bpftrace {v}" for v in versions) + " |", "|---" * (len(versions) + 1) + "|"]
    for title, key in rows:
        lines.append(f"| {title} | " + " | ".join(str(data[v].get(key, "-")) for v in versions) + " |")
    return "\n".join(lines) + "\n"


def test_every_cell_is_valid_or_refused(
    running: dict[str, int], bpftrace: Bpftrace, report: dict[str, dict[str, Any]]
) -> None:
    cells = [Cell(s, a, p) for s in SUBJECTS for a in ACTIONS for p in PROBES]
    for cell in cells:
        plan_cell(cell, running[cell.subject.name], bpftrace)
    valid = [c for c in cells if c.code == 0]
    refused = [c for c in cells if c.code != 0]
    for c in refused:
        lines = c.err.splitlines()
        assert len(lines) == 2 and lines[0].startswith("ctrace: error: ") and lines[1].startswith("hint: "), c.err
        assert _hint_leads_somewhere(c, cells), f"{c.key}: the hint leads nowhere valid: {c.err}"
    for c in valid:  # a RET is a number on a bpftrace that cannot check sym+offset
        assert c.probe_json["attach"] == c.subject.attach or c.probe == "return", (c.key, c.probe_json["shell"])
    warnings: list[str] = []
    defects: list[str] = []
    retries: list[str] = []
    # One bpftrace per binary, its stacks apart (0.17 loses maps and stack ids when one
    # program names many stacks: dialect.EXIT_DEFECTS), and what needs --unsafe apart: its
    # warning is allowed only there.
    for s, unsafe, stacks in itertools.product(SUBJECTS, (False, True), (False, True)):
        group = [
            (n, c)
            for n, c in enumerate(valid)
            if c.subject == s and ("--unsafe" in c.probe_json["argv"]) is unsafe and (c.action == "stack") is stacks
        ]
        if group:
            for attempt in range(3):
                found = fire_group(group, running, bpftrace, unsafe)
                if all(c.fired for _, c in group):
                    break
                # Seen with 0.17 only, now and then, while other bpftrace sessions run: a
                # map or its END program fails to load (dialect.EXIT_DEFECTS). Again; the run
                # that counts must be right.
                if attempt < 2:
                    retries.append(f"{s.name}{' --unsafe' if unsafe else ''}{' stacks' if stacks else ''}")
            warnings += found[0]
            defects += found[1]
    wrong = [f"{c.key}: {c.detail or 'did not fire'}" for c in valid if not c.fired]
    REPORT.setdefault(bpftrace.version, {}).update(
        {
            "valid": len(valid) - len(wrong),
            "refused": len(refused),
            "wrong": len(wrong),
            "warnings": len(warnings),
            "unsafe": sum("--unsafe" in c.probe_json["argv"] for c in valid),
            "retries": len(retries),
            "exit_defects": len(defects),
            "retried": retries,
            "go_latency": _detail(valid, "latency/uprobe/go"),
            "c_latency": _detail(valid, "latency/uprobe/c"),
            "cells": {c.key: _outcome(c) for c in cells},
        }
    )
    assert not warnings, warnings
    assert not wrong, wrong


def _outcome(c: Cell) -> str:
    if c.code:
        return "refused: " + c.err.splitlines()[0].removeprefix("ctrace: error: ")
    return ("ok: " if c.fired else "WRONG: ") + (c.detail or ("fired" if c.fired else "did not fire"))


def _detail(cells: list[Cell], key: str) -> str:
    return next((c.detail for c in cells if c.key == key), "-")


def _hint_leads_somewhere(cell: Cell, cells: list[Cell]) -> bool:
    """A refusal's hint names a --probe that is valid for the same action and binary, or
    asks to drop --probe (the default, valid), or names a bpftrace release."""
    hint = cell.err.splitlines()[1]
    if "drop --probe" in hint:
        probes = ["uprobe"]
    else:
        probes = re.findall(r"--probe (\w+)", hint)
    same = {c.probe: c.code for c in cells if c.subject == cell.subject and c.action == cell.action}
    return any(same.get(p) == 0 for p in probes) or bool(re.search(r"bpftrace .*\d+\.\d+", hint))


def fire_group(
    group: list[tuple[int, Cell]], running: dict[str, int], bt: Bpftrace, unsafe: bool
) -> tuple[list[str], list[str]]:
    """Run the group's programs as one; (warnings, bpftrace's own errors at exit)."""
    argv = [bt.path, *(["--unsafe"] if unsafe else []), "-e", merge([(n, c) for n, c in group])]
    session = Session(argv)
    if not session.wait_attached(timeout=120):
        pytest.fail(f"bpftrace did not attach: {session.stop()[1]}\n{argv[-1]}")
    time.sleep(0.8)  # some dozens of calls of each function (each sleeps ~20 ms)
    # Stop the subjects first, so bpftrace prints every event it holds before SIGINT ends it
    # (stacks it prints after detaching are "failed to look up stack id" errors).
    pids = {running[c.subject.name] for _, c in group}
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        session.drain(quiet=0.5)
        out, err = session.stop()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    if os.environ.get("CTRACE_MATRIX_DEBUG"):
        debug = Path(os.environ["CTRACE_MATRIX_DEBUG"] + f".{bt.version}.{group[0][1].subject.name}.{int(unsafe)}")
        with debug.open("a") as f:
            f.write(f"{argv}\n{out}\n{err}\n=====\n")
    for n, cell in group:
        check_fired(n, cell, out, running[cell.subject.name])
    return program_warnings(err, argv), [ln for ln in err.splitlines() if EXIT_DEFECTS.search(ln)]


def latency_median(argv: list[str], seconds: float = 2.0) -> tuple[str, str]:
    """Run a latency program as printed; the median bucket of its histogram and stderr."""
    session = Session(argv)
    if not session.wait_attached(timeout=120):
        pytest.fail(f"bpftrace did not attach: {session.stop()[1]}")
    time.sleep(seconds)
    out, err = session.stop()
    return median_bucket(_hist(out, "@usecs")), err


@pytest.mark.parametrize("subject", ["go", "c"])
def test_latency_median_is_the_sleep(
    subjects: dict[str, Path],
    processes: Processes,
    bpftrace: Bpftrace,
    subject: str,
    report: dict[str, dict[str, Any]],
) -> None:
    """Go: 32 goroutines on 4 threads each block ~20 ms per call; keyed by goroutine the
    median lands in the 20 ms bucket. The same program keyed by thread does not (the
    control: a goroutine resumes on another thread, another's start is read). C: a plain
    ~20 ms sleep."""
    proc = processes.start(subjects[subject], *(["32"] if subject == "go" else []))
    func = "main.block" if subject == "go" else "work"
    probe = json.loads(ctrace_json("target", f"pid:{proc.pid}", "--func", func, "--action", "latency", *bpftrace.args))[
        "targets"
    ][0]["probes"][0]
    argv = probe["argv"]
    median, err = latency_median(argv)
    assert not program_warnings(err, argv), err
    assert median == SLEEP_BUCKET, (median, probe["shell"])
    mine = report.setdefault(bpftrace.version, {})
    mine[f"{subject}_latency_printed"] = median
    if subject == "go":
        by_thread = [*argv[:-1], argv[-1].replace('pid, reg("r14")', "tid")]
        assert by_thread != argv
        wrong, _ = latency_median(by_thread)
        mine["go_latency_by_thread"] = wrong
        assert wrong != SLEEP_BUCKET, "the control should have measured wrong"


def ctrace_json(*args: str) -> str:
    res = ctrace(*args, "-o", "json")
    assert res.code == 0, res.err
    return res.out
