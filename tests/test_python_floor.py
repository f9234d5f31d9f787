"""ctrace runs on every Python from its floor (pyproject's requires-python) up: the host's
python3 and the Debian releases' python3 in the bpftrace chroots (hack/bpftrace-versions.sh),
each running the pure-Python CLI from this source tree and agreeing with the host's answers."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Built, Processes, ctrace, need

CHROOTS = Path(os.environ.get("CTRACE_BPFTRACE_CACHE", "/var/cache/ctrace-bpftrace"))
SUITES = ("bookworm", "trixie", "sid")  # Debian 12, 13 and unstable: a chroot for each but the host's


def host_suite() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    found = re.search(r"^VERSION_CODENAME=(\S+)", text, re.M)
    return found[1] if found else ""


def others() -> list[str]:
    """The suites whose python3 comes from a chroot: the host's own release has none (its python3 is the host's)."""
    return [s for s in SUITES if s != host_suite()]


def floor() -> tuple[int, int]:
    text = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'requires-python = ">=(\d+)\.(\d+)"', text)
    assert found, "pyproject.toml names no requires-python floor"
    return int(found[1]), int(found[2])


def chroot_python(suite: str) -> list[str]:
    """The suite's python3, run from the host's namespaces through the chroot's own loader."""
    d = CHROOTS / suite
    libs = f"{d}/usr/lib/x86_64-linux-gnu:{d}/lib/x86_64-linux-gnu"
    return [f"{d}/lib64/ld-linux-x86-64.so.2", "--library-path", libs, f"{d}/usr/bin/python3"]


def run_under(python: list[str], suite: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONHOME": str(CHROOTS / suite / "usr"),
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ of another Python in the tree
        "CTRACE_PURE": "1",  # the C speedups are built for the host's Python only
        "CTRACE_NO_CACHE": "1",  # marshal's format is the writer's Python's
    }
    return subprocess.run([*python, "-m", "ctrace", *args], capture_output=True, text=True, env=env, timeout=120)


def version_of(python: list[str], suite: str) -> tuple[int, int]:
    env = {**os.environ, "PYTHONHOME": str(CHROOTS / suite / "usr")}
    out = subprocess.run(
        [*python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, env=env
    )
    major, minor = out.stdout.split()
    return int(major), int(minor)


def test_the_host_python_is_at_or_above_the_floor() -> None:
    assert sys.version_info[:2] >= floor()


def test_the_floor_is_a_python_that_is_tested() -> None:
    """The floor is the oldest Python this suite runs ctrace under, not a guess."""
    tested = {sys.version_info[:2]}
    for suite in SUITES:
        python = chroot_python(suite)
        if Path(python[-1]).exists():
            tested.add(version_of(python, suite))
    assert min(tested) == floor(), f"tested {sorted(tested)}, floor {floor()}"


@pytest.mark.parametrize("suite", others())
def test_cli_runs_under_another_debian_python(suite: str, built: Built, processes: Processes) -> None:
    python = chroot_python(suite)
    need(Path(python[-1]).exists(), f"no python3 in {CHROOTS / suite} (make test builds it: hack/bpftrace-versions.sh)")
    assert version_of(python, suite) >= floor()
    helped = run_under(python, suite, "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: ctrace"), helped.stderr
    assert run_under(python, suite, "version").stdout.splitlines()[0] == ctrace("version").out.splitlines()[0]
    # The same answers as the host's Python: a listing, a command and the process table.
    symbols = run_under(python, suite, "symbols", str(built["names"]), "-o", "json")
    assert symbols.returncode == 0, symbols.stderr
    assert (
        json.loads(symbols.stdout)["symbols"] == ctrace("symbols", str(built["names"]), "-o", "json").json()["symbols"]
    )
    proc = processes.start(built["hello"])
    target = run_under(python, suite, "target", f"pid:{proc.pid}", "--func", "hello", "-o", "json")
    assert target.returncode == 0, target.stderr
    here = ctrace("target", f"pid:{proc.pid}", "--func", "hello", "-o", "json").json()
    assert json.loads(target.stdout)["targets"][0]["probes"] == here["targets"][0]["probes"]
    ps = run_under(python, suite, "ps", "hello")
    assert ps.returncode == 0 and any(line.split()[0] == str(proc.pid) for line in ps.stdout.splitlines()[1:])
    mistake = run_under(python, suite, "trget")
    assert mistake.returncode == 2 and "did you mean 'target'?" in mistake.stderr


@pytest.mark.parametrize("suite", others())
def test_a_remote_daemon_without_the_docker_sdk_says_what_to_install(suite: str) -> None:
    """The docker SDK is an extra: a chroot's python3 has none, as a plain pip install has none."""
    python = chroot_python(suite)
    need(Path(python[-1]).exists(), f"no python3 in {CHROOTS / suite}")
    os.environ["DOCKER_HOST"], before = "tcp://127.0.0.1:9", os.environ.get("DOCKER_HOST")
    try:
        res = run_under(python, suite, "target", "some-container", "--func", "main")
    finally:
        if before is None:
            del os.environ["DOCKER_HOST"]
        else:
            os.environ["DOCKER_HOST"] = before
    assert res.returncode == 3, res.stderr
    assert res.stderr.splitlines() == [
        "ctrace: error: DOCKER_HOST=tcp://127.0.0.1:9 needs the docker SDK, which is not installed",
        "hint: pip install 'ctrace[remote-docker]'",
    ]
