"""Separate debug info: build-id files, .gnu_debuglink, MiniDebugInfo; libc against bpftrace -l."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ctrace import elf
from ctrace.bpftrace import dialect
from ctrace.model import Binary
from ctrace.plan import locate, probes
from ctrace.plan.request import Request
from ctrace.resolvers import Context, host
from tests.conftest import Bpftrace, Built, Processes, ctrace, fire, need, need_bpftrace, run
from tests.symfix import (
    LIBC,
    every_command_fires,
    load_base,
    one_probe,
    sym_fixture,  # noqa: F401 - provides the "sym" fixture
)


@pytest.mark.parametrize(("name", "source"), [("counted-linked", "debuglink"), ("counted-mini", "minidebuginfo")])
def test_debug_file_names_functions(sym: Built, name: str, source: str) -> None:
    res = ctrace("symbols", str(sym[name]), "-o", "json")
    assert res.code == 0, res.err
    data = res.json()
    found = {s["name"]: s["source"] for s in data["symbols"]}
    assert found["helper_only_in_debug"] == source and found["classify"] == source
    assert data["sources"][source] >= 3
    assert data["debug_files"][0]["source"] == source
    if source == "debuglink":
        assert data["debug_files"][0]["path"] == str(sym["counted-linked.debug"])


def test_debuglink_with_wrong_crc_is_ignored(sym: Built, tmp_path: Path) -> None:
    shutil.copy(sym["counted-linked"], tmp_path / "counted-linked")
    debug = bytearray(sym["counted-linked.debug"].read_bytes())
    debug[-1] ^= 0xFF
    (tmp_path / "counted-linked.debug").write_bytes(bytes(debug))
    assert "debuglink" not in elf.inspect(str(tmp_path / "counted-linked")).sources()


@pytest.mark.bpftrace
def test_debuglink_only_function_fires(sym: Built, processes: Processes, bpftraces: list[Bpftrace]) -> None:
    """bcc reads the debuglink file too, so bpftrace takes the virtual address (and names the frame)."""
    proc = processes.start(sym["counted-linked"], "loop")
    for bt in bpftraces:
        probe = one_probe(f"pid:{proc.pid}", "--func", "helper_only_in_debug", *bt.args)
        assert probe["attach"] == "address" and "--unsafe" not in probe["argv"]
        assert f":{hex(probe['address'])} " in probe["argv"][-1] and probe["where"] == f"vaddr {hex(probe['address'])}"
        every_command_fires(probe, "helper_only_in_debug", proc.pid, bt)


@pytest.mark.bpftrace
def test_minidebuginfo_only_function_fires(sym: Built, processes: Processes, bpftraces: list[Bpftrace]) -> None:
    """bcc does not read .gnu_debugdata: bpftrace sees a stripped file and takes a file offset."""
    proc = processes.start(sym["counted-mini"], "loop")
    for bt in bpftraces:
        probe = one_probe(f"pid:{proc.pid}", "--func", "helper_only_in_debug", *bt.args)
        assert probe["attach"] == "address" and "--unsafe" in probe["argv"]
        # Measured: 0.27's ustack reads .gnu_debugdata and names the frame; 0.17 and 0.23 print its address.
        named = tuple(map(int, bt.version.split("."))) >= (0, 27)
        top = "helper_only_in_debug" if named else hex(load_base(proc.pid, sym["counted-mini"]) + probe["address"])
        every_command_fires(probe, top, proc.pid, bt)


def test_libc_lists_what_bpftrace_lists() -> None:
    need_bpftrace()
    need(os.path.exists(LIBC), "no libc")
    info = elf.inspect(LIBC)
    need("build-id" in info.sources(), "libc6-dbg is not installed (make test installs it)")
    out = run(["bpftrace", "-l", f"uprobe:{LIBC}:*"]).stdout.splitlines()
    listed = {ln.split(":", 2)[2] for ln in out}
    names = {s.name for s in info.symbols}
    assert listed <= names
    assert info.sources()["build-id"] > 4000 and len(names) >= len(listed) > 7000


@pytest.mark.bpftrace
def test_libc_debug_only_function_fires(built: Built, processes: Processes, bpftraces: list[Bpftrace]) -> None:
    """new_do_write (behind fflush) is named only by libc's build-id debug file."""
    info = elf.inspect(LIBC)
    need("build-id" in info.sources(), "libc6-dbg is not installed (make test installs it)")
    (target,) = [s for s in info.symbols if s.name == "new_do_write"]
    assert target.source == "build-id"
    assert not [s for s in info.symbols if s.address == target.address and s.source == "dynsym"]
    proc = processes.start(built["hello-dyn"])
    ctx = Context(proc_root="/proc", self_pid=os.getpid())
    host_path = f"/proc/{proc.pid}/root{LIBC}"
    binary = Binary(LIBC, host_path, None, info.build_id, info.stripped, info.language)
    loaded = locate.Loaded(host.process(proc.pid, ctx), binary, info, [])
    for bt in bpftraces:
        request = Request(f"pid:{proc.pid}", ("new_do_write",), dialect=dialect.of(bt.path))
        (probe,) = probes.probes(loaded, [target], ctx, request)
        # bcc reads the same build-id file, so bpftrace takes the virtual address
        argv = probe.commands[0].argv
        assert probe.attach == "address" and hex(target.address) in argv[-1] and argv[0] == bt.path
        result = fire(argv, "new_do_write", want=2)
        assert result.fired, (bt.version, result.stderr)
        assert result.pids == {proc.pid} and not result.warnings, (bt.version, result.pids, result.warnings)
