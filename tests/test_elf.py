"""The fast ELF reader against pyelftools, readelf and `bpftrace -l`, on real binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ctrace import elf
from ctrace.elf.reader import ElfFile, open_elf
from ctrace.errors import NotFound, NotTraceable
from ctrace.model import Symbol
from tests import elf_reference as reference
from tests.conftest import Built, need, need_bpftrace, run

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
SYSTEM = [LIBC, os.path.realpath("/usr/bin/python3"), "/usr/sbin/dockerd", "/usr/bin/containerd"]
FIXTURES = ["hello", "hello-dyn", "hello-stripped", "hello-dyn-stripped", "stack-unwind", "acme", "cilium-agent"]


def system_binary(path: str) -> str:
    need(os.path.exists(path), f"{path} is not installed (make test installs docker.io)")
    return path


def names(path: str) -> set[str]:
    return {s.name for s in elf.inspect(path).symbols}


def tables(path: str) -> tuple[Symbol, ...]:
    """What .symtab and .dynsym alone give (pyelftools' reference reads nothing else)."""
    return tuple(s for s in elf.inspect(path).symbols if s.source in ("symtab", "dynsym"))


def bpftrace_names(path: str) -> set[str]:
    out = run(["bpftrace", "-l", f"uprobe:{path}:*"]).stdout
    prefix = f"uprobe:{path}:"
    return {line[len(prefix) :] for line in out.splitlines() if line.startswith(prefix)}


@pytest.mark.parametrize("name", FIXTURES)
def test_fast_path_equals_pyelftools_on_fixtures(built: Built, name: str) -> None:
    path = str(built[name])
    assert tables(path) == tuple(reference.symbols(path))


@pytest.mark.parametrize("path", SYSTEM)
def test_fast_path_equals_pyelftools_on_system_binaries(path: str) -> None:
    system_binary(path)
    fast = tables(path)
    assert len(fast) > 1000
    assert fast == tuple(reference.symbols(path))


@pytest.mark.parametrize("name", FIXTURES)
def test_lists_every_probe_bpftrace_lists_on_fixtures(built: Built, name: str) -> None:
    need_bpftrace()
    path = str(built[name])
    missing = bpftrace_names(path) - names(path)
    assert not missing


@pytest.mark.parametrize("path", SYSTEM)
def test_lists_every_probe_bpftrace_lists_on_system_binaries(path: str) -> None:
    need_bpftrace()
    system_binary(path)
    listed = bpftrace_names(path)
    # bpftrace also reads the separate debug file; ctrace now does too (issue 5).
    missing = listed - names(path)
    assert listed and not missing


def test_build_id_matches_readelf(built: Built) -> None:
    path = str(built["hello"])
    text = run(["readelf", "-n", path]).stdout
    line = next(ln for ln in text.splitlines() if "Build ID" in ln)
    assert elf.inspect(path).build_id == line.split(":", 1)[1].strip()


@pytest.mark.parametrize(
    ("name", "language", "stripped"),
    [
        ("hello", "c", False),
        ("hello-stripped", "c", True),
        ("stack-unwind-nofp", "c", False),
        ("acme", "c++", False),
        ("cilium-agent", "go", False),
        ("cilium-agent-stripped", "go", True),
    ],
)
def test_language_and_strip_state(built: Built, name: str, language: str, stripped: bool) -> None:
    info = elf.inspect(str(built[name]))
    assert (info.language, info.stripped) == (language, stripped)


def test_language_rust(tmp_path: Path) -> None:
    rustc = shutil.which("rustc")
    need(rustc is not None, "rustc is not installed (make test does not install it)", optional=True)
    assert rustc is not None
    src = tmp_path / "m.rs"
    src.write_text('#[inline(never)] fn work(x: u64) -> u64 { x * 3 }\nfn main() { println!("{}", work(7)); }\n')
    subprocess.run([rustc, "-O", "-o", str(tmp_path / "m"), str(src)], check=True, capture_output=True)
    assert elf.inspect(str(tmp_path / "m")).language == "rust"


def test_stripped_static_binary_has_no_functions(built: Built) -> None:
    assert elf.inspect(str(built["hello-stripped"])).symbols == ()


def test_stripped_rdynamic_keeps_dynsym(built: Built) -> None:
    info = elf.inspect(str(built["hello-dyn-stripped"]))
    found = {s.name: s.source for s in info.symbols}
    assert found["hello"] == "dynsym"
    assert "symtab" not in info.sources()


def test_vaddr_to_offset_matches_readelf(built: Built) -> None:
    path = str(built["hello"])
    f = open_elf(path)
    hello = next(s for s in elf.inspect(path).symbols if s.name == "hello")
    text_load = next(p for p in f.segments if p.type == 1 and p.vaddr <= hello.address < p.vaddr + p.filesz)
    assert f.vaddr_to_offset(hello.address) == hello.address - text_load.vaddr + text_load.offset
    assert f.vaddr_to_offset(0) is None


def test_not_elf(tmp_path: Path) -> None:
    p = tmp_path / "script.sh"
    p.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(NotTraceable, match="not an ELF"):
        elf.inspect(str(p))


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty"
    p.write_bytes(b"")
    with pytest.raises(NotTraceable, match="not an ELF"):
        elf.inspect(str(p))


def test_directory_fifo_and_missing(tmp_path: Path) -> None:
    with pytest.raises(NotTraceable, match="directory"):
        elf.inspect(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotTraceable, match="not a regular file"):
        elf.inspect(str(fifo))  # must return at once, not block on open
    with pytest.raises(NotFound):
        elf.inspect(str(tmp_path / "missing"))


def test_truncated_file(built: Built) -> None:
    data = built["hello"].read_bytes()
    with pytest.raises(NotTraceable):
        ElfFile(data[:200], "truncated")
