"""Two functions of one name in one binary (two ``static int work(int)``, two
``(anonymous namespace)::work``): every probe ctrace prints fires at the function it
names and only there, on every bpftrace (issue 22).

bpftrace turns an address into (the covering symbol's name, offset) and looks the name up
again, taking the first function so named (dialect.first_namesake): a probe at the second
fires at the first. ctrace gives the second a file offset no symbol covers (--unsafe) where
one exists (a -no-pie build), else leaves it out with a note naming the first.

Where each probe fires is read with ``reg("ip")`` and held to the machine code (``nm``,
``objdump``), not to ctrace: an entry probe at the function's entry, a RET probe at one of
its RETs, a uretprobe at a return address just after a call of it; the namesake stays
silent (its entry, RETs and callers are other addresses).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from ctrace import elf
from ctrace.bpftrace import dialect, sites
from ctrace.elf.reader import open_elf
from tests import matrix_program as program
from tests.conftest import SRC, Bpftrace, Built, Processes, Session, ctrace, need, program_warnings, run

CPP_WORK = "_ZN12_GLOBAL__N_14workEll"
# binary -> (--func, the name in nm)
SUBJECTS = {
    "pie": ("work", "work"),  # both static; their file offsets are addresses inside functions
    "nopie": ("work", "work"),  # the second reached by file offset
    "dynsym": ("work", "work"),  # first.c's work exported: .dynsym's, at the higher address, is bcc's first
    "cpp": ("(anonymous namespace)::work", CPP_WORK),  # the version matrix's cpp-addr pair
}
# (action, probe): the entry, the uretprobe, the RETs, and latency's entry and uretprobe together
CELLS = (("count", "uprobe"), ("count", "uretprobe"), ("count", "return"), ("latency", "uprobe"))


@pytest.fixture(scope="module")
def binaries(built: Built) -> dict[str, Path]:
    for tool in ("gcc", "g++", "nm", "objdump"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (make test installs it)")
    src, out = SRC / "namesakes", built.dir / "namesakes"
    out.mkdir(exist_ok=True)
    cc = ["-O0", "-fno-omit-frame-pointer"]
    run(["gcc", *cc, "-o", out / "pie", src / "first.c", src / "second.c"])
    run(["gcc", *cc, "-no-pie", "-o", out / "nopie", src / "first.c", src / "second.c"])
    # second.o first: its static work lies lower and comes first in .symtab, but bcc reads
    # .dynsym (first.c's exported work) before .symtab.
    run(["gcc", *cc, "-c", "-o", out / "second.o", src / "second.c"])
    run(["gcc", *cc, "-DWORK_LINKAGE=", "-c", "-o", out / "first.o", src / "first.c"])
    run(["gcc", "-rdynamic", "-o", out / "dynsym", out / "second.o", out / "first.o"])
    run(["g++", *cc, "-o", out / "cpp", SRC / "matrix" / "dup.cpp", SRC / "matrix" / "dup2.cpp"])
    return {name: out / name for name in SUBJECTS}


def functions(path: Path, name: str) -> dict[int, tuple[int, set[int], set[int]]]:
    """entry -> (size, RETs, return addresses of its calls), for each function ``name`` (nm, objdump)."""
    found = {}
    listing = run(["objdump", "-d", "--no-show-raw-insn", path]).stdout.splitlines()
    for line in run(["nm", "-S", "--defined-only", path]).stdout.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tT" and fields[3] == name:
            start, size = int(fields[0], 16), int(fields[1], 16)
            found[start] = (size, *_rets_and_callers(listing, start, size))
    assert len(found) == 2, (path, name, found)
    return found


def _rets_and_callers(listing: list[str], start: int, size: int) -> tuple[set[int], set[int]]:
    rows = [(int(m.group(1), 16), m.group(2)) for ln in listing if (m := re.match(r"^\s+([0-9a-f]+):\s+(.*)$", ln))]
    rets = {a for a, text in rows if start <= a < start + size and re.match(r"retq?\s*$", text)}
    after_call = {nxt for (a, text), (nxt, _) in itertools.pairwise(rows) if re.match(rf"call\s+{start:x}\b", text)}
    assert rets and after_call, (hex(start), rets, after_call)
    return rets, after_call


def heads(argv: list[str]) -> list[str]:
    """The uprobe and uretprobe attach points of a printed program, as printed."""
    found = [head.split(" /", 1)[0] for head, _ in program.blocks(argv[-1])]
    return [h for h in dict.fromkeys(found) if h.startswith(("uprobe:", "uretprobe:"))]


def plan(pid: int, func: str, action: str, probe: str, bt: Bpftrace) -> tuple[int, list[dict[str, Any]], str]:
    res = ctrace("target", f"pid:{pid}", "--func", func, "--action", action, "--probe", probe, *bt.args, "-o", "json")
    if res.code != 0:
        return res.code, [], res.err
    (target,) = res.json()["targets"]
    return 0, list(target["probes"]), "\n".join(target.get("warnings", []))


def fired(argv_heads: list[tuple[int, str]], pid: int, bt: Bpftrace, unsafe: bool) -> tuple[dict[int, set[int]], str]:
    """Run the heads with a ``reg("ip")`` count each for ``pid``: n -> addresses it fired at."""
    blocks = " ".join(f'{h} /pid == {pid}/ {{ @ip_{n}[reg("ip")] = count(); }}' for n, h in argv_heads)
    argv = [bt.path, *(["--unsafe"] if unsafe else []), "-e", blocks]
    session = Session(argv)
    if not session.wait_attached(timeout=120):
        pytest.fail(f"bpftrace did not attach: {session.stop()[1]}\n{blocks}")
    time.sleep(1.5)  # dozens of calls of each work (each sleeps 10 ms)
    out, err = session.stop()
    assert not program_warnings(err, argv), err
    hits = {n: {int(a) for a in re.findall(rf"^@ip_{n}\[(\d+)\]: \d+", out, re.M)} for n, _ in argv_heads}
    return hits, err


@pytest.mark.bpftrace
@pytest.mark.parametrize("subject", list(SUBJECTS))
def test_each_probe_fires_at_its_own_function(
    binaries: dict[str, Path], processes: Processes, bpftrace: Bpftrace, subject: str
) -> None:
    func, nm_name = SUBJECTS[subject]
    path = binaries[subject]
    works = functions(path, nm_name)
    proc = processes.start(path)
    bias = program.load_bias(proc.pid, path)
    runs: dict[bool, list[tuple[int, str]]] = {False: [], True: []}
    expect: dict[int, tuple[str, int]] = {}  # head number -> (what it must hit, the function's entry)
    for action, probe in CELLS:
        code, probes, notes = plan(proc.pid, func, action, probe, bpftrace)
        if code != 0:  # bpftrace 0.17 checks no RET of a PIE (test_returns); one line and a hint
            assert probe == "return" and subject != "nopie", notes
            assert len(notes.splitlines()) == 2 and notes.startswith("ctrace: error: "), notes
            continue
        probed = {p["address"] for p in probes}
        left_out = {int(a, 16) for a in re.findall(r"cannot probe .*? at (0x[0-9a-f]+) \(", notes)}
        # Each work is probed or named in a note; a -no-pie build has a file offset for both.
        assert probed | left_out == set(works) and not probed & left_out, (action, probe, probes, notes)
        assert len(probed) == (2 if subject == "nopie" else 1), (action, probe, notes)
        for p in probes:
            unsafe = "--unsafe" in p["argv"]
            for h in heads(p["argv"]):
                n = len(expect)
                kind = "ret" if probe == "return" else "caller" if h.startswith("uretprobe:") else "entry"
                expect[n] = (kind, p["address"])
                runs[unsafe].append((n, h))
    hits: dict[int, set[int]] = {}
    for unsafe, group in runs.items():
        if group:
            hits.update(fired(group, proc.pid, bpftrace, unsafe)[0])
    for n, (kind, entry) in expect.items():
        _, rets, callers = works[entry]
        want = {"entry": {entry}, "ret": rets, "caller": callers}[kind]
        got = {a - bias for a in hits[n]}
        others = set().union(*(({e} | r | c) for e, (_, r, c) in works.items() if e != entry))
        assert got and got <= want and not got & others, (subject, kind, hex(entry), sorted(map(hex, got)))


@pytest.mark.bpftrace
def test_bpftrace_takes_the_first_namesake(binaries: dict[str, Path], processes: Processes, bpftrace: Bpftrace) -> None:
    """The fact dialect.first_namesake states, per release: a probe at either work's address
    fires at one and the same work; a -no-pie build's file offset (no symbol covers it,
    --unsafe) fires where it says."""
    pie, nopie = binaries["pie"], binaries["nopie"]
    entries = sorted(functions(pie, "work"))
    proc = processes.start(pie)
    bias = program.load_bias(proc.pid, pie)
    heads = [(n, f"uprobe:{pie}:0x{e:x}") for n, e in enumerate(entries)]
    hits, _ = fired(heads, proc.pid, bpftrace, unsafe=False)
    assert dialect.Dialect().first_namesake
    (first,) = {a - bias for n in hits for a in hits[n]}
    assert first in entries
    proc = processes.start(nopie)
    vaddrs = sorted(functions(nopie, "work"))
    nopie_elf = open_elf(str(nopie))
    offsets = [(n, f"uprobe:{nopie}:0x{nopie_elf.vaddr_to_offset(v) or 0:x}") for n, v in enumerate(vaddrs)]
    hits, _ = fired(offsets, proc.pid, bpftrace, unsafe=True)
    assert hits == {n: {v} for n, v in enumerate(vaddrs)}, hits


def test_the_namesake_alone_is_refused_with_a_hint(binaries: dict[str, Path]) -> None:
    """The function bpftrace cannot reach, asked for alone: one line naming the other and a hint."""
    path = str(binaries["pie"])
    info = elf.inspect(path)
    spans, index, elf_file = sites.bcc_visible(info, path), sites.NameIndex(info.symbols), open_elf(path)
    first_address = elf_file.first_function("work")
    first, second = sorted((s for s in info.symbols if s.name == "work"), key=lambda s: s.address != first_address)
    for d in (dialect.Dialect((0, 17, 0)), dialect.Dialect((0, 23, 2)), dialect.Dialect((0, 27, 1))):
        site = sites.entry_site(first, elf_file, spans, index, d, path)
        assert site is not None and site.kind == "address" and int(site.text, 16) == first.address
        with pytest.raises(sites.SharedName) as refused:
            sites.entry_site(second, elf_file, spans, index, d, path)
        err = refused.value
        assert f"at 0x{first.address:x} comes first" in err.message and "\n" not in err.message
        assert f"0x{first.address:x}" in err.hint and "-no-pie" in err.hint
        if d.offset_probes:
            with pytest.raises(sites.SharedName):
                sites.return_sites(second, elf_file, spans, path, index, d)
            assert sites.return_sites(first, elf_file, spans, path, index, d)


def test_cli_leaves_the_namesake_out_with_a_note(binaries: dict[str, Path], processes: Processes) -> None:
    """Through the CLI the namesake is left out with a note, the first traced (no bpftrace run)."""
    proc = processes.start(binaries["pie"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "work", "-o", "json")
    assert res.code == 0, res.err
    (target,) = json.loads(res.out)["targets"]
    notes = [w for w in target["warnings"] if "cannot probe" in w]
    assert len(target["probes"]) == 1 and len(notes) == 1, target
    assert f"0x{target['probes'][0]['address']:x} comes first" in notes[0] and "left out" in notes[0]


def test_symbols_wide_says_which_namesake_bpftrace_reaches(binaries: dict[str, Path]) -> None:
    """``ctrace symbols -o wide``: the namesake no number reaches is '-', the other 'address';
    in the -no-pie build both are reached (the second by file offset)."""
    for name, reached in (("pie", 1), ("nopie", 2)):
        res = ctrace("symbols", str(binaries[name]), "--func", "work", "-o", "wide")
        assert res.code == 0, res.err
        rows = [ln.split() for ln in res.out.splitlines() if ln.endswith(" work")]
        assert len(rows) == 2 and sorted(r[4] for r in rows) == (["-", "address"] if reached == 1 else ["address"] * 2)


@pytest.mark.bpftrace
def test_run_stacks_show_only_the_probed_work(
    binaries: dict[str, Path], processes: Processes, bpftrace: Bpftrace
) -> None:
    """--run: the frame under each work is its own caller. Position-independent, only
    first.c's work (called from main) is traced and second.c's (from call_second) is named
    in a note; -no-pie, both are traced."""
    for name in ("pie", "nopie"):
        proc = processes.start(binaries[name])
        res = ctrace("target", f"pid:{proc.pid}", "--func", "work", "--run", "--duration", "2", *bpftrace.args)
        assert res.code == 0, res.err
        stacks = [b for b in res.out.split("\n\n") if re.search(r"^\s+work\+0x0 ", b, re.M)]
        callers = {re.findall(r"^\s+(\w+)\+0x", b, re.M)[1] for b in stacks}
        assert callers == ({"main"} if name == "pie" else {"main", "call_second"}), (name, res.out)
        assert ("left out" in res.err) is (name == "pie"), res.err
        proc.kill()
        proc.wait()
