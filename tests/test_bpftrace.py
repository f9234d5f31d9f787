"""End to end: run the processes, ask ctrace, run every command it prints, see the probe fire."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HOSTILE, PWNED, STAR_T, Bpftrace, Built, Processes, ctrace, fire, need_bpftrace

pytestmark = pytest.mark.bpftrace
REGEN = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"


@pytest.fixture(autouse=True)
def _bpftrace() -> None:
    need_bpftrace()


def targets(target: str, *funcs: str) -> list[dict[str, Any]]:
    """``ctrace target`` as JSON; a "--bpftrace" among ``funcs`` is passed as the option."""
    args = ["target", target, "-o", "json"]
    items = iter(funcs)
    for f in items:
        args += [f, next(items)] if f == "--bpftrace" else ["--func", f]
    res = ctrace(*args)
    assert res.code == 0, res.err
    found: list[dict[str, Any]] = res.json()["targets"]
    return found


def commands(probe: dict[str, Any]) -> list[list[str]]:
    return [probe["argv"], *(alt["argv"] for alt in probe["alternatives"])]


def assert_every_command_fires(probe: dict[str, Any], symbol: str | None = None) -> list[list[str]]:
    """Run the recommended command and every alternative; return the first stack of each."""
    stacks = []
    for argv in commands(probe):
        result = fire(argv, symbol or probe["symbol"])
        assert result.fired, f"{argv} did not fire: {result.stderr}"
        assert not result.warnings, result.stderr
        stacks.append(result.stacks[0])
    return stacks


@pytest.mark.parametrize(
    ("binary", "func", "symbol", "shown"),
    [
        ("hello", "hello", "hello", "hello"),
        ("hello-dyn-stripped", "hello", "hello", "hello"),
        # bpftrace demangles C++ in ustack.
        ("acme", "handshake", "_ZN4acme3net4Conn9handshakeEi", "acme::net::Conn::handshake(int)"),
        ("cilium-agent", "regenerate", REGEN, REGEN),
    ],
)
def test_printed_commands_fire(
    built: Built, processes: Processes, binary: str, func: str, symbol: str, shown: str, bpftrace: Bpftrace
) -> None:
    proc = processes.start(built[binary])
    (t,) = targets(f"pid:{proc.pid}", func, *bpftrace.args)
    (probe,) = t["probes"]
    assert probe["symbol"] == symbol
    assert probe["attach"] == "name"
    assert_every_command_fires(probe, shown)


def test_process_name_target_fires(built: Built, processes: Processes) -> None:
    proc = processes.start(built["stack-unwind"])
    found = [t for t in targets("stack-unwind", "func_c") if t["pid"] == proc.pid]
    (t,) = found
    (stack,) = assert_every_command_fires(t["probes"][0])[:1]
    # The tracing-basics post's frame-pointer stack (4.1): func_c's caller frames are there.
    assert any(line.startswith("main+") for line in stack)


def test_omit_frame_pointer_stack_is_shorter_but_fires(built: Built, processes: Processes) -> None:
    with_fp = processes.start(built["stack-unwind"])
    without_fp = processes.start(built["stack-unwind-nofp"])
    (fp_stack,) = assert_every_command_fires(targets(f"pid:{with_fp.pid}", "func_c")[0]["probes"][0])[:1]
    (nofp_stack,) = assert_every_command_fires(targets(f"pid:{without_fp.pid}", "func_c")[0]["probes"][0])[:1]
    assert nofp_stack[0].startswith("func_c+0")
    assert not any(line.startswith("main+") for line in nofp_stack)
    assert len(nofp_stack) < len(fp_stack)


def test_glob_that_would_expand_uses_address_and_fires(built: Built, processes: Processes) -> None:
    proc = processes.start(built["names"])
    (t,) = targets(f"pid:{proc.pid}", STAR_T)
    (probe,) = t["probes"]
    assert probe["symbol"] == STAR_T and probe["attach"] == "address"
    assert_every_command_fires(probe)


def test_hostile_symbol_fires_and_runs_nothing(built: Built, processes: Processes) -> None:
    if os.path.exists(PWNED):
        os.unlink(PWNED)
    proc = processes.start(built["names"])
    (t,) = targets(f"pid:{proc.pid}", HOSTILE)
    (probe,) = t["probes"]
    assert probe["symbol"] == HOSTILE and probe["attach"] == "address"
    assert HOSTILE not in probe["shell"]
    assert_every_command_fires(probe, symbol=HOSTILE)
    assert not os.path.exists(PWNED)


def test_hostile_path_falls_back_to_proc_exe(built: Built, processes: Processes, tmp_path: Path) -> None:
    marker = Path.cwd() / "ctrace-pwned"  # where an injected `touch ctrace-pwned` would land
    weird = tmp_path / "we\"ird $(touch ctrace-pwned) 'dir`"
    weird.mkdir()
    exe = weird / "hello"
    exe.write_bytes(built["hello"].read_bytes())
    exe.chmod(0o755)
    proc = processes.start(exe)
    (t,) = targets(f"pid:{proc.pid}", "hello")
    assert t["binary"]["path"] == str(exe)
    (probe,) = t["probes"]
    # The path cannot stand in a bpftrace attach point, so only the /proc/PID/exe form is offered.
    assert probe["form"] == "exe" and probe["alternatives"] == []
    assert_every_command_fires(probe)
    assert not marker.exists()
