"""--tool perf: the printed perf probe / record / script / delete lines work with the machine's perf."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import Built, Processes, ctrace, need, need_bpftrace


def test_perf_path_records_the_function(built: Built, processes: Processes, tmp_path: Path) -> None:
    need_bpftrace()  # root, and tracefs mounted by make test
    need(shutil.which("perf") is not None, "perf is not installed (Debian: linux-perf)")
    proc = processes.start(built["stack-unwind"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "func_c", "--tool", "perf", "-o", "json")
    assert res.code == 0, res.err
    add, record, script, delete = (s["argv"] for s in res.json()["targets"][0]["probes"][0]["perf"])
    assert (
        add[:3] == ["perf", "probe", "-x"] and script == ["perf", "script"] and delete[:3] == ["perf", "probe", "--del"]
    )
    added = subprocess.run(add, capture_output=True, text=True)
    refused = added.returncode != 0 and "uprobe_events" in added.stderr
    need(not refused, f"this kernel does not let perf add uprobes: {added.stderr.strip()}", optional=True)
    assert added.returncode == 0, added.stderr
    try:
        data = tmp_path / "perf.data"
        # The printed record runs for 10 s; the same command, for 2 s, into a file of the test's.
        short = [*record[: record.index("--")], "-o", str(data), "--", "sleep", "2"]
        recorded = subprocess.run(short, capture_output=True, text=True, timeout=60)
        assert recorded.returncode == 0, recorded.stderr
        shown = subprocess.run([*script, "-i", str(data)], capture_output=True, text=True, timeout=60)
        assert "func_c" in shown.stdout
    finally:
        subprocess.run(delete, capture_output=True)
    listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    assert add[-1].split("=")[0].split(":")[1] not in listed
