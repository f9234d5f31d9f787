"""The runtime x capability table of issue 14, each cell written by the test that measured it.

Set CTRACE_RUNTIME_REPORT=/path/table.md: every test that measures a cell
merges it into /path/table.md.json and rewrites the Markdown table beside it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROWS = ("docker", "containerd plain", "containerd CRI", "podman", "kind-like nested", "CRI-O from captures")
COLUMNS = (
    "by name",
    "by PID",
    "identity",
    "pod",
    "root filesystem path",
    "fired from the host",
    "fired inside the node",
)


def record(row: str, column: str, value: str) -> None:
    assert row in ROWS and column in COLUMNS, (row, column)
    target = os.environ.get("CTRACE_RUNTIME_REPORT")
    if not target:
        return
    side = Path(target + ".json")
    cells: dict[str, dict[str, str]] = json.loads(side.read_text()) if side.exists() else {}
    cells.setdefault(row, {})[column] = value
    side.write_text(json.dumps(cells, indent=1))
    lines = ["| runtime | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for r in ROWS:
        lines.append(f"| {r} | " + " | ".join(cells.get(r, {}).get(c, "not run") for c in COLUMNS) + " |")
    Path(target).write_text("\n".join(lines) + "\n")
