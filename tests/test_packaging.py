"""The wheel carries the package, both console scripts and the version from ctrace/__init__.py."""

from __future__ import annotations

import os
import re
import shutil
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
    assert "ctrace = ctrace.cli:run" in entry_points
    assert "kubectl-ctrace = ctrace.cli:run" in entry_points
    assert "kubectl_complete-ctrace = ctrace.cli.completion:kubectl_main" in entry_points  # kubectl ctrace <TAB>
    assert "ctrace/elf/reader.py" in names and "ctrace/resolvers/kubernetes.py" in names
    assert not any(n.startswith("tests/") for n in names)
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    # What ctrace imports at run time, and nothing else; the rest are extras.
    required = {
        re.split(r"[<>=!; ]", line.removeprefix("Requires-Dist: "))[0].lower()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist: ") and "extra ==" not in line
    }
    assert required == {"psutil", "kubernetes", "pyyaml", "capstone"}
    assert 'Requires-Dist: docker>=6.1; extra == "remote-docker"' in metadata
    assert "Requires-Python: >=3.11" in metadata


def test_every_required_package_is_imported_by_ctrace() -> None:
    """A dependency ctrace never imports is weight every user installs for nothing."""
    source = "\n".join(p.read_text() for p in (ROOT / "ctrace").rglob("*.py"))
    for module in ("psutil", "kubernetes", "yaml", "capstone"):
        assert re.search(rf"^\s*(import {module}\b|from {module}\b)", source, re.M), module
    for extra in ("elftools",):
        assert not re.search(rf"^\s*(import {extra}\b|from {extra}\b)", source, re.M), extra


def _wheel(src: Path, out: Path, env: dict[str, str]) -> list[str]:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        env=env,
    )
    (wheel,) = out.glob("ctrace-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_the_speedups_are_optional(tmp_path: Path) -> None:
    """With a compiler the wheel carries _speedups; without one it still builds, without them
    (setup.py's optional=True), and ctrace runs its Python twins."""
    src = tmp_path / "src"
    shutil.copytree(
        ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.so", "__pycache__", "*.egg-info")
    )
    built = _wheel(src, tmp_path / "with", dict(os.environ))
    assert any(n.startswith("ctrace/elf/_speedups") and n.endswith(".so") for n in built)
    shutil.rmtree(src / "build", ignore_errors=True)
    bare = _wheel(src, tmp_path / "without", {**os.environ, "CC": "/bin/false"})
    assert "ctrace/elf/reader.py" in bare and not any(n.endswith(".so") for n in bare)
