"""The version matrix's helpers (tests/test_matrix.py): merging the cells' printed
programs into one, running and reading bpftrace's histograms, and where each cell's probes
must fire.

Where a probe fires is read from the machine code, not from ctrace: the function's entry
from ``nm``, its RET instructions from ``objdump``, and the load bias from
``/proc/PID/maps``; a uprobe head of a cell's program is copied with a body that prints
``ipN ADDRESS`` from ``reg("ip")`` (issue 22: on bpftrace 0.23 and 0.27 ``"name with *"+N``
fired at the entry). Printed as it fires, not kept in a map: bpftrace 0.17 now and then
fails to load its END program and then prints no map at all (dialect.EXIT_DEFECTS).
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Session, run

_BLOCK = re.compile(r"\s*([^{}]+?)\s*\{ ?([^{}]*?) ?\}")
_MAPS = ("@start", "@usecs", "@calls")


def blocks(program: str) -> list[tuple[str, str]]:
    """(head, body) of each block of a program ctrace printed (no braces nest in them)."""
    found = [(m.group(1), m.group(2)) for m in _BLOCK.finditer(program)]
    assert "".join(f"{h} {{ {b} }}" for h, b in found).replace(" ", "") == program.replace(" ", ""), program
    return found


def site_blocks(n: int, program: str, pid: int) -> list[str]:
    """Each uprobe of the program again, printing ``ipN ADDRESS`` where it fires for ``pid``."""
    heads = [head.split(" /", 1)[0] for head, _ in blocks(program) if head.startswith("uprobe:")]
    return [f'{h} /pid == {pid}/ {{ printf("ip{n} %lu\\n", reg("ip")); }}' for h in dict.fromkeys(heads)]


def merge(cells: Iterable[tuple[int, str]], sites: Iterable[str] = ()) -> str:
    """The cells' programs as one: one BEGIN and one END, the binding's blocks once, each
    cell's own maps renamed and its printf lines tagged ``cN``, then ``sites``."""
    begin: dict[str, None] = {}
    end: dict[str, None] = {}
    shared: dict[str, None] = {}
    config: dict[str, None] = {}  # the dialect's config block: once, first, as bpftrace wants it
    own: list[str] = []
    for n, program in cells:
        for head, body in blocks(program):
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
    parts = [*config, f"BEGIN {{ {' '.join(begin)} }}", *shared, *own, *sites, f"END {{ {' '.join(end)} }}"]
    return " ".join(parts)


def hist(out: str, name: str) -> list[tuple[str, int]]:
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


def latency_median(argv: list[str], seconds: float = 2.0) -> tuple[str, str]:
    """Run a latency program as printed; the median bucket of its histogram and stderr."""
    session = Session(argv)
    if not session.wait_attached(timeout=120):
        pytest.fail(f"bpftrace did not attach: {session.stop()[1]}")
    time.sleep(seconds)
    out, err = session.stop()
    return median_bucket(hist(out, "@usecs")), err


def share(rows: list[tuple[str, int]], bucket: str) -> float:
    """The fraction of the samples in ``bucket``."""
    total = sum(n for _, n in rows)
    return sum(n for b, n in rows if b == bucket) / total if total else 0.0


def fired_at(n: int, out: str) -> set[int]:
    """The addresses cell ``n``'s uprobes fired at (site_blocks)."""
    return {int(a) for a in re.findall(rf"^ip{n} (\d+)$", out, re.M)}


def function_sites(path: Path, name: str) -> tuple[int, set[int]]:
    """(entry, RET addresses) of the function ``name`` (or the one name starting with it,
    for a name ending in '*'), read with nm and objdump."""
    listing = [ln.split(" ", 3) for ln in run(["nm", "-S", "--defined-only", path]).stdout.splitlines()]
    found = [
        (int(a, 16), int(s, 16))
        for a, s, t, n in (x for x in listing if len(x) == 4)
        if t in "Tt" and (n == name or (name.endswith("*") and n.startswith(name[:-1])))
    ]
    assert len(found) == 1, (name, found)
    ((start, size),) = found
    return start, _rets(path, name, start, size)


def namesake_sites(path: Path, name: str) -> dict[int, tuple[int, set[int]]]:
    """entry -> (entry, RET addresses) of each of the functions named ``name`` (nm, objdump)."""
    listing = [ln.split(" ", 3) for ln in run(["nm", "-S", "--defined-only", path]).stdout.splitlines()]
    found = [(int(a, 16), int(s, 16)) for a, s, t, n in (x for x in listing if len(x) == 4) if t in "Tt" and n == name]
    assert len(found) > 1, (name, found)
    return {start: (start, _rets(path, name, start, size)) for start, size in found}


def _rets(path: Path, name: str, start: int, size: int) -> set[int]:
    text = run(["objdump", "-d", f"--start-address={start}", f"--stop-address={start + size}", path]).stdout
    rets = {int(ln.split(":")[0], 16) for ln in text.splitlines() if re.search(r"\sret[q]?\s*$", ln)}
    assert rets, (name, text)
    return rets


def data_address(path: Path, name: str) -> int:
    """The address of the symbol ``name`` (a Go global, a generic's dictionary)."""
    for line in run(["nm", "--defined-only", path]).stdout.splitlines():
        addr, _, sym = line.split(" ", 2)
        if sym == name:
            return int(addr, 16)
    raise AssertionError(f"{name} not in {path}")


def load_bias(pid: int, path: Path) -> int:
    """What the process adds to the file's virtual addresses (0 for a fixed-address file)."""
    first = next(ln for ln in run(["readelf", "-lW", path]).stdout.splitlines() if ln.split()[:1] == ["LOAD"])
    vaddr = int(first.split()[2], 16) & ~0xFFF
    real = os.path.realpath(path)
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and fields[5] == real and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16) - vaddr
    raise AssertionError(f"{path} is not mapped by {pid}")


def site_verdict(action: str, probe: str, language: str, hits: set[int], entry: int, rets: set[int]) -> str:
    """'' if the cell's uprobes fired where they must: the entry where the action or probe
    takes it, a RET (never the entry) where the probe or Go's latency takes it."""
    want_entry = action == "latency" or probe == "uprobe"
    want_ret = probe == "return" or (action == "latency" and language == "go")
    wrong = sorted(hits - {entry} - rets)
    if (entry in hits) != want_entry or bool(hits & rets) != want_ret or wrong:
        at = ", ".join(map(hex, sorted(hits))) or "nothing"
        return f"fired at {at} (entry {entry:#x}, RETs {', '.join(map(hex, sorted(rets)))})"
    return ""


def markdown(data: dict[str, dict[str, Any]]) -> str:
    versions = sorted(data)
    rows = [
        ("cells valid (fire, right data)", "valid"),
        ("cells refused (one line + hint)", "refused"),
        ("cells wrong", "wrong"),
        ("  of them, names bpftrace reads as wildcards or quotes: valid", "names_valid"),
        ("  refused", "names_refused"),
        ("  wrong", "names_wrong"),
        ('cells whose uprobes fired where they must (reg("ip"))', "sites_right"),
        ("warnings seen (not the machine's)", "warnings"),
        ("unsafe cells (their one warning allowed)", "unsafe"),
        ("groups run again (a map or END failed to load: 0.17, a busy machine)", "retries"),
        ("bpftrace's own errors at exit (dialect.EXIT_DEFECTS: 0.17)", "exit_defects"),
        ("Go latency, matrix (8 goroutines, 20 ms sleep)", "go_latency"),
        ("Go main.(*Book).Reconcile latency, matrix", "go_method_latency"),
        ("C latency, matrix (20 ms sleep)", "c_latency"),
        ("Go latency median, printed program (32 goroutines, GOMAXPROCS 4)", "go_latency_printed"),
        ("  the same keyed by thread (control: must be wrong)", "go_latency_by_thread"),
        ("C latency median, printed program", "c_latency_printed"),
        ("Go method latency in [16K, 32K), printed program", "go-method_latency_printed"),
        ("Go method latency in [16K, 32K), --run", "go-method_latency_run"),
    ]
    lines = ["| | " + " | ".join(f"bpftrace {v}" for v in versions) + " |", "|---" * (len(versions) + 1) + "|"]
    for title, key in rows:
        lines.append(f"| {title} | " + " | ".join(str(data[v].get(key, "-")) for v in versions) + " |")
    return "\n".join(lines) + "\n"
