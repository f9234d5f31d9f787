"""Issue 5 fixtures: counted.c with a debuglink file and MiniDebugInfo, gocount, the gosym reference.

Shared by test_pclntab, test_debuginfo, test_returns and test_demangle.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SRC, Bpftrace, Built, ctrace, fire, need, run

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
REGEN = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"
CALLS = 7  # COUNT in counted.c and count in gocount/main.go


@pytest.fixture(scope="session", name="sym")
def sym_fixture(built: Built) -> Built:
    """counted.c with a debuglink file and with MiniDebugInfo; gocount; the gosym reference."""
    for tool in ("objcopy", "nm", "xz"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (make test installs it)")
    out = built.dir / "symbols"
    out.mkdir(exist_ok=True)
    run(["gcc", "-O2", "-g", "-fno-omit-frame-pointer", "-o", out / "counted", SRC / "counted.c"])
    _debuglink(out)
    _minidebuginfo(out)
    env = {**os.environ, "GOCACHE": str(built.dir / "gocache"), "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    for name in ("gocount", "gosymref"):
        run(["go", "build", "-o", out / name, "."], cwd=SRC / name, env=env)
    run(["go", "build", "-ldflags=-s -w", "-o", out / "gocount-stripped", "."], cwd=SRC / "gocount", env=env)
    return Built(out)


def _debuglink(out: Path) -> None:
    """The Debian/GDB way: objcopy --only-keep-debug, strip, --add-gnu-debuglink."""
    run(["objcopy", "--only-keep-debug", out / "counted", out / "counted-linked.debug"])
    run(["strip", "-s", "-o", out / "counted-linked", out / "counted"])
    run(["objcopy", "--add-gnu-debuglink=counted-linked.debug", out / "counted-linked"], cwd=out)


def _minidebuginfo(out: Path) -> None:
    """Fedora's find-debuginfo: keep the function symbols .dynsym lacks, xz them into .gnu_debugdata."""
    dyn = {
        ln.split()[0]
        for ln in run(["nm", "-D", "--format=posix", "--defined-only", out / "counted"]).stdout.splitlines()
    }
    funcs = [
        ln.split()[0]
        for ln in run(["nm", "--format=posix", "--defined-only", out / "counted"]).stdout.splitlines()
        if ln.split()[1] in ("T", "t")
    ]
    (out / "keep").write_text("\n".join(sorted(set(funcs) - dyn)) + "\n")
    run(["objcopy", "--only-keep-debug", out / "counted", out / "full.debug"])
    run(
        [
            "objcopy",
            "-S",
            "--remove-section",
            ".comment",
            "--keep-symbols",
            out / "keep",
            out / "full.debug",
            out / "mini",
        ]
    )
    run(["xz", "-f", out / "mini"])
    run(["strip", "-s", "-o", out / "counted-mini", out / "counted"])
    run(["objcopy", "--add-section", f".gnu_debugdata={out / 'mini.xz'}", out / "counted-mini"])


def one_probe(*args: str) -> dict[str, Any]:
    res = ctrace("target", *args, "-o", "json")
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    (probe,) = t["probes"]
    return dict(probe)


def every_command_fires(probe: dict[str, Any], top: str, pid: int, bt: Bpftrace) -> list[str]:
    """Run the recommended command and every alternative, printed for ``bt``: each fires, only
    in ``pid``, without a warning. Returns the forms."""
    forms = []
    for cmd in [probe, *probe["alternatives"]]:
        argv = cmd["argv"]
        assert argv[0] == bt.path, argv  # --bpftrace names the binary the line runs
        result = fire(argv, top, want=2)
        assert result.fired, f"{bt.version}: {argv} did not fire: {result.stderr}"
        assert result.pids == {pid}, (bt.version, cmd["form"], result.pids)
        assert not result.warnings, (bt.version, cmd["form"], result.warnings)
        forms.append(cmd["form"])
    return forms


def every_version_fires(bts: Sequence[Bpftrace], top: str, pid: int, *args: str) -> None:
    """Ask ctrace for the program with each bpftrace's --bpftrace and run every command it prints."""
    for bt in bts:
        every_command_fires(one_probe(*args, *bt.args), top, pid, bt)


def load_base(pid: int, path: Path) -> int:
    """Where the kernel mapped ``path`` (offset 0) in process ``pid``: PIE frames are absolute."""
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path) and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16)
    raise AssertionError(f"{path} is not mapped in {pid}")
