"""A short run of the overhead benchmark: it measures every mode and prints the table (no time asserted)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.conftest import ROOT, need, need_bpftrace


def test_overhead_smoke_prints_every_mode() -> None:
    need_bpftrace()
    need(shutil.which("gcc") is not None, "gcc is not installed")
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.overhead", "--smoke"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    rows = re.findall(r"^\| (.+?) \| .+? \| ([\d.]+) M \| ([\d.]+)x \|", res.stdout, re.M)
    labels = [r[0] for r in rows]
    assert labels == [
        "no probe",
        "empty uprobe (floor)",
        "bpftrace's own stacks",
        "ctrace default",
        "ctrace aggregated stacks",
    ], res.stdout
    slowdown = {label: float(x) for label, _, x in rows}
    assert slowdown["no probe"] == 1.0
    # every probe costs the traced program something: a mode that did not attach would not
    assert all(slowdown[label] > 1.0 for label in labels[1:]), res.stdout
    assert re.search(r"ctrace's aggregated stacks: [\d.]+x bpftrace's own", res.stdout)
