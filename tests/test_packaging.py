"""The wheel carries the package, both console scripts and the version from ctrace/__init__.py."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from ctrace import __version__
from tests.conftest import ROOT


def test_wheel_has_both_console_scripts(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ctrace-*.whl")
    assert wheel.name.startswith(f"ctrace-{__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "ctrace = ctrace.cli:main" in entry_points
    assert "kubectl-ctrace = ctrace.cli:main" in entry_points
    assert "ctrace/elf/reader.py" in names and "ctrace/resolvers/kubernetes.py" in names
    assert not any(n.startswith("tests/") for n in names)
