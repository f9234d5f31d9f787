"""Separate debug info: build-id files, .gnu_debuglink, MiniDebugInfo; libc against bpftrace -l."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ctrace import elf, plan
from ctrace.model import Binary
from ctrace.resolvers import Context, host
from tests.conftest import Built, Processes, ctrace, fire, need, need_bpftrace, run
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
def test_debuglink_only_function_fires(sym: Built, processes: Processes) -> None:
    """bcc reads the debuglink file too, so bpftrace takes the virtual address (and names the frame)."""
    need_bpftrace()
    proc = processes.start(sym["counted-linked"], "loop")
    probe = one_probe(f"pid:{proc.pid}", "--func", "helper_only_in_debug")
    assert probe["attach"] == "address" and "--unsafe" not in probe["argv"]
    assert f":{hex(probe['address'])} " in probe["argv"][-1] and probe["where"] == f"vaddr {hex(probe['address'])}"
    every_command_fires(probe, "helper_only_in_debug")


@pytest.mark.bpftrace
def test_minidebuginfo_only_function_fires(sym: Built, processes: Processes) -> None:
    """bcc does not read .gnu_debugdata: bpftrace sees a stripped file and takes a file offset."""
    need_bpftrace()
    proc = processes.start(sym["counted-mini"], "loop")
    probe = one_probe(f"pid:{proc.pid}", "--func", "helper_only_in_debug")
    assert probe["attach"] == "address" and "--unsafe" in probe["argv"]
    every_command_fires(probe, hex(load_base(proc.pid, sym["counted-mini"]) + probe["address"]))


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
def test_libc_debug_only_function_fires(built: Built, processes: Processes) -> None:
    """new_do_write (behind fflush) is named only by libc's build-id debug file."""
    need_bpftrace()
    info = elf.inspect(LIBC)
    need("build-id" in info.sources(), "libc6-dbg is not installed (make test installs it)")
    (target,) = [s for s in info.symbols if s.name == "new_do_write"]
    assert target.source == "build-id"
    assert not [s for s in info.symbols if s.address == target.address and s.source == "dynsym"]
    proc = processes.start(built["hello-dyn"])
    ctx = Context(proc_root="/proc", self_pid=os.getpid())
    host_path = f"/proc/{proc.pid}/root{LIBC}"
    binary = Binary(LIBC, host_path, None, info.build_id, info.stripped, info.language)
    loaded = plan.Loaded(host.process(proc.pid, ctx), binary, info, [])
    (probe,) = plan.probes(loaded, [target], ctx, plan.Request(f"pid:{proc.pid}", ("new_do_write",)))
    # bcc reads the same build-id file, so bpftrace takes the virtual address
    assert probe.attach == "address" and hex(target.address) in probe.commands[0].argv[-1]
    result = fire(probe.commands[0].argv, "new_do_write")
    assert result.fired, result.stderr
