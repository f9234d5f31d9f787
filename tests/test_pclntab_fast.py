"""The column-at-a-time .gopclntab reader returns exactly what the per-entry one did
(tests/pclntab_reference.py): same symbols, same order, on every Go binary at hand."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctrace.elf import pclntab, symtab
from ctrace.elf.reader import ElfFile, open_elf
from ctrace.model import Symbol
from tests.conftest import SRC, Built, need, run
from tests.pclntab_reference import reference_functions, reference_parse, reference_scan
from tests.symfix import sym_fixture  # noqa: F401 - provides the "sym" fixture

SYSTEM = ["/usr/sbin/dockerd", "/usr/bin/containerd", "/usr/local/bin/docker"]
# 32-bit big-endian, 32-bit little-endian, 64-bit big-endian: the layouts x86-64 does not show.
CROSS = ["mips", "386", "s390x"]


@pytest.fixture(scope="module")
def cross(sym: Built) -> Built:
    """gocount built stripped for other architectures (CGO_ENABLED=0 cross-compiles)."""
    out = sym.dir / "cross"
    out.mkdir(exist_ok=True)
    env = {**os.environ, "GOCACHE": str(sym.dir.parent / "gocache"), "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    for arch in CROSS:
        args = ["go", "build", "-ldflags=-s -w", "-o", out / f"gocount-{arch}", "."]
        run(args, cwd=SRC / "gocount", env={**env, "GOARCH": arch})
    return Built(out)


def assert_same(elf: ElfFile, monkeypatch: pytest.MonkeyPatch) -> list[Symbol]:
    symbols = tuple(elf.symbols())
    expected = reference_functions(elf, symbols)
    assert len(expected) > 1000
    with monkeypatch.context() as m:  # the per-entry fallback must not be what answers
        m.setattr(pclntab, "_entries", _no_fallback)
        assert pclntab.functions(elf, symbols) == expected
    return expected


def _no_fallback(*args: object) -> list[Symbol]:
    raise AssertionError("the 1.18+ table took the per-entry path")


@pytest.mark.parametrize("name", ["cilium-agent-stripped", "cilium-agent"])
def test_fixture_cilium(built: Built, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same(open_elf(str(built[name])), monkeypatch)


@pytest.mark.parametrize("name", ["gocount", "gocount-stripped", "gosymref"])
def test_fixture_symbols(sym: Built, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_same(open_elf(str(sym[name])), monkeypatch)


@pytest.mark.parametrize("arch", CROSS)
def test_cross_built(cross: Built, sym: Built, arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(cross[f"gocount-{arch}"])
    elf = open_elf(path)
    assert elf.is64 == (arch == "s390x") and (elf.endian == ">") == (arch != "386")
    mine = assert_same(elf, monkeypatch)
    ref = run([str(sym["gosymref"]), path]).stdout.splitlines()
    assert [s.name for s in mine] == [ln.split(" ", 1)[1] for ln in ref]


@pytest.mark.parametrize("path", SYSTEM)
def test_system_binaries(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    need(os.path.exists(path), f"{path} is not installed (make test installs docker.io)")
    found = assert_same(open_elf(path), monkeypatch)
    if path == "/usr/sbin/dockerd":  # names_at on the funcnametab, against decode() per name
        assert sum(not s.name.isascii() for s in found) > 10


@pytest.mark.parametrize("path", ["/usr/sbin/dockerd", "/usr/local/bin/docker"])
def test_moduledata_finds_what_the_scan_finds(path: str) -> None:
    need(os.path.exists(path), f"{path} is not installed")
    elf = open_elf(path)
    need(elf.section(".gopclntab") is None, f"{path} has a .gopclntab section")
    table, scanned = pclntab.find(elf), reference_scan(elf)
    assert table is not None and scanned is not None and table.found == "moduledata"
    assert (table.data, table.vaddr) == (scanned.data, scanned.vaddr)


def test_value_of_reads_one_object_symbol() -> None:
    path = "/usr/sbin/dockerd"
    need(os.path.exists(path), f"{path} is not installed")
    nm = run(["nm", "-D", path]).stdout.split("\n")
    (line,) = [ln for ln in nm if ln.endswith(" runtime.firstmoduledata")]
    elf = open_elf(path)
    dyn = elf.section(".dynsym")
    assert dyn is not None
    strings = elf.sections[dyn.link]
    spans = (dyn.offset, dyn.size), (strings.offset, strings.size)
    assert symtab.value_of(elf.data, b"runtime.firstmoduledata", *spans, True, "<") == int(line.split()[0], 16)
    assert symtab.value_of(elf.data, b"firstmoduledata", *spans, True, "<") is None  # a tail, no symbol
    assert symtab.value_of(elf.data, b"runtime.no-such-symbol", *spans, True, "<") is None


def _guarded(parse: Callable[[pclntab.Table, ElfFile], list[Symbol]], table: pclntab.Table, elf: ElfFile) -> object:
    try:
        return parse(table, elf)
    except (struct.error, IndexError, ValueError) as err:
        return type(err)


@pytest.fixture(scope="module")
def small(sym: Built) -> tuple[ElfFile, pclntab.Table]:
    elf = open_elf(str(sym["gocount-stripped"]))
    table = pclntab.find(elf)
    assert table is not None
    return elf, table


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupt_tables_fail_like_the_reference(
    small: tuple[ElfFile, pclntab.Table], edits: list[tuple[int, int]]
) -> None:
    """Edits aimed at the header, the functab, the _func records and the names: the fast
    path either gives the reference's answer or hands over to the per-entry path."""
    elf, table = small
    data = bytearray(table.data)
    funcs = struct.unpack_from("<Q", data, 8 + 7 * 8)[0]
    for pos, value in edits:
        spot = (funcs + pos) % len(data) if pos % 3 else pos % 64
        data[spot] = value
    mutated = table._replace(data=bytes(data))
    assert _guarded(pclntab.parse, mutated, elf) == _guarded(reference_parse, mutated, elf)


def test_unaligned_func_takes_the_per_entry_path(small: tuple[ElfFile, pclntab.Table]) -> None:
    elf, table = small
    data = bytearray(table.data)
    funcs = struct.unpack_from("<Q", data, 8 + 7 * 8)[0]
    data[funcs + 4] |= 1  # the first funcoff, now odd
    mutated = table._replace(data=bytes(data))
    assert _guarded(pclntab.parse, mutated, elf) == _guarded(reference_parse, mutated, elf)


def test_parse_order_is_the_tables(small: tuple[ElfFile, pclntab.Table]) -> None:
    elf, table = small
    found = pclntab.parse(table, elf)
    assert [s.address for s in found] == sorted(s.address for s in found)
    assert all(s.size > 0 and s.source == "pclntab" for s in found)
