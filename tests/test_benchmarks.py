"""A short smoke run of the benchmark runner: it runs and prints sane tables (no timing asserted)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.conftest import ROOT, need


def test_bench_smoke_prints_tables() -> None:
    need(shutil.which("gcc") is not None and shutil.which("nm") is not None, "gcc and nm are needed")
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    row = re.search(r"^\| libc \| \d+ \| (\d+) \| (\d+) ms \| (\d+) ms \(([\d.]+)x\) \|", out, re.M)
    assert row, out
    functions, nm_ms, ctrace_ms, ratio = int(row[1]), int(row[2]), int(row[3]), float(row[4])
    assert functions > 1000  # libc exports thousands of functions
    assert nm_ms > 0 and ctrace_ms > 0
    assert abs(ratio - ctrace_ms / nm_ms) <= 0.5 * ratio  # the ratio is of the printed medians (rounded)
    goals = re.findall(r"^\| (.+?) \| (.+?) \| (.+?) \| (met|NOT met|not measured) \|(.*)\|$", out, re.M)
    assert {g[0] for g in goals} >= {"symbols -o json, libc", "ctrace --help", "target on a host process imports"}
    imports = next(g for g in goals if g[0] == "target on a host process imports")
    assert imports[1] == "none", out
    cached = next(g for g in goals if g[0] == "second call (cache), libc")
    floor = re.search(r"^Floor of any `ctrace` run: (\d+) ms", out, re.M)
    assert floor, out
    # a limit under the interpreter's own start is named as such, not left to look like a near miss
    assert ("< floor" in cached[4]) == (0.3 * nm_ms < int(floor[1])), out  # libc: ~6 ms against ~13
    assert re.search(r"C speedups built|no C speedups", out), out
