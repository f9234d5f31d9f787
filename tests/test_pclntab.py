"""Stripped Go: the function table against Go's own debug/gosym, and probes that fire."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrace import elf
from ctrace.elf import code, pclntab
from ctrace.elf.reader import open_elf
from tests.conftest import ROOT, Bpftrace, Built, Processes, need, run
from tests.symfix import (
    REGEN,
    every_command_fires,
    one_probe,
    sym_fixture,  # noqa: F401 - provides the "sym" fixture
)


def gosym(ref: Path, path: str) -> list[tuple[int, str]]:
    table = pclntab.find(open_elf(path))
    assert table is not None
    offset = open_elf(path).data.find(table.data[:64])
    lines = run([str(ref), path, str(offset)]).stdout.splitlines()
    return [(int(a, 16), n) for a, n in (ln.split(" ", 1) for ln in lines)]


def test_pclntab_equals_go_debug_gosym_on_stripped_fixture(built: Built, sym: Built) -> None:
    path = str(built["cilium-agent-stripped"])
    info = elf.inspect(path)
    assert info.stripped and set(info.sources()) == {"pclntab"}
    assert [(s.address, s.name) for s in info.symbols] == sorted(gosym(sym["gosymref"], path))
    # the function we trace sits where the unstripped build's .symtab puts it
    full = {s.name: s.address for s in elf.inspect(str(built["cilium-agent"])).symbols if s.source == "symtab"}
    (regen,) = [s for s in info.symbols if s.name == REGEN]
    assert regen.address == full[REGEN]


@pytest.mark.parametrize("path", ["/usr/sbin/dockerd", "/usr/bin/containerd"])
def test_pclntab_on_system_go_binaries(sym: Built, path: str) -> None:
    need(os.path.exists(path), f"{path} is not installed (make test installs docker.io)")
    mine = pclntab.functions(open_elf(path))
    ref = gosym(sym["gosymref"], path)
    assert len(mine) == len(ref) > 40_000
    assert [s.name for s in mine] == [n for _, n in ref]
    # debug/gosym is handed .text's start; the real text start (runtime.text) follows the C
    # start-up code of an externally linked binary, so the two differ by one constant.
    assert len({s.address - a for s, (a, _) in zip(mine, ref)}) == 1
    # the addresses are right: names these binaries also export in .dynsym agree
    dyn: dict[str, set[int]] = {}
    for s in open_elf(path).symbols():
        dyn.setdefault(s.name, set()).add(s.address)
    once = Counter(s.name for s in mine)  # ABI0 wrappers share a name with the ABIInternal function
    shared = [s for s in mine if len(dyn.get(s.name, ())) == 1 and once[s.name] == 1]
    assert len(shared) > 1000
    assert all(s.address in dyn[s.name] for s in shared)


@pytest.mark.parametrize(("path", "how"), [("/usr/sbin/dockerd", "moduledata"), ("/usr/bin/containerd", "section")])
def test_pclntab_is_found(path: str, how: str) -> None:
    need(os.path.exists(path), f"{path} is not installed (make test installs docker.io)")
    table = pclntab.find(open_elf(path))
    assert table is not None and table.found == how


@pytest.mark.bpftrace
def test_stripped_go_regenerate_fires(built: Built, processes: Processes, bpftraces: list[Bpftrace]) -> None:
    proc = processes.start(built["cilium-agent-stripped"])
    f = open_elf(str(built["cilium-agent-stripped"]))
    for bt in bpftraces:
        probe = one_probe(f"pid:{proc.pid}", "--func", "regenerate", *bt.args)
        assert probe["symbol"] == REGEN and probe["attach"] == "address"
        assert "--unsafe" in probe["argv"]
        # the printed number is the entry's file offset inside an executable PT_LOAD
        offset = hex(code.code_offset(f, probe["address"]) or -1)
        where = f"file offset {offset} (vaddr {hex(probe['address'])})"
        assert f":{offset} " in probe["argv"][-1] and probe["where"] == where
        every_command_fires(probe, hex(probe["address"]), proc.pid, bt)


@pytest.fixture(scope="module")
def stripped_container(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The stripped cilium look-alike in a FROM scratch container; yields its host PID."""
    need(shutil.which("docker") is not None, "docker is not installed (make test installs docker.io)")
    need(subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "dockerd is not running")
    ctx = tmp_path_factory.mktemp("img")
    shutil.copy(built["cilium-agent-stripped"], ctx / "cilium-agent")
    shutil.copy(ROOT / "demo" / "cilium-agent" / "Dockerfile", ctx / "Dockerfile")
    tag = f"ctrace-test/cilium-agent-stripped:{os.getpid()}"
    run(["docker", "build", "-q", "-t", tag, str(ctx)])
    cid = run(["docker", "run", "-d", "--rm", tag]).stdout.strip()
    try:
        yield int(run(["docker", "inspect", "-f", "{{.State.Pid}}", cid]).stdout.strip())
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@pytest.mark.docker
@pytest.mark.bpftrace
def test_stripped_go_container_regenerate_fires(stripped_container: int, bpftraces: list[Bpftrace]) -> None:
    for bt in bpftraces:
        probe = one_probe(f"pid:{stripped_container}", "--func", "regenerate", *bt.args)
        assert probe["symbol"] == REGEN and "--unsafe" in probe["argv"]
        assert f"/proc/{stripped_container}/root/usr/bin/cilium-agent:" in probe["argv"][-1]
        # Every other form (MergedDir, -p with the in-container path, /proc/PID/exe bound by a
        # pid filter rather than -p, see emit.command) fires too, and -p and paths differ by version.
        forms = every_command_fires(probe, hex(probe["address"]), stripped_container, bt)
        assert forms == ["proc-root", "merged", "pid-path", "exe"], (bt.version, forms)
