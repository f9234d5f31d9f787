"""The C speedups (ctrace/elf/_speedups.c) against the Python code they stand in for, byte for byte.

The twin of each C function is the Python that runs without it (speedups.module is
None: not built, or CTRACE_PURE=1): elf.inspect plus render.json_rows/text_rows for
listing.build, symtab.functions' column decoding for _speedups.functions. Real
binaries, the fixtures, synthetic files with awkward names, and mutated files.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrace.elf import listing, speedups, symtab
from ctrace.elf.listing import Listing
from ctrace.elf.reader import open_elf
from ctrace.elf.symtab import NATIVE
from ctrace.errors import CtraceError
from tests import elfgen, fuzzing
from tests.conftest import Built, ctrace, need
from tests.fuzzing import python_listing
from tests.symfix import LIBC, sym_fixture  # noqa: F401 - provides the "sym" fixture

SYSTEM = [
    "/usr/sbin/dockerd",
    "/usr/bin/containerd",
    "/usr/local/bin/docker",
    LIBC,
    os.path.realpath("/usr/bin/python3"),
    "/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1",  # where make bench installed it
    "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",  # C++: demangled in C straight into the rows
]
FIXTURES = ["hello", "hello-dyn-stripped", "acme", "names", "cilium-agent", "cilium-agent-stripped"]
SYMBOL_FIXTURES = ["counted-linked", "counted-mini", "gocount-stripped"]


@pytest.fixture(autouse=True)
def built_speedups() -> None:
    # hack/setup.sh builds them (pip install -e): under CI they must be there, or
    # every test here would compare the Python code with itself.
    need(speedups.module is not None, "ctrace/elf/_speedups.c is not built (pip install -e . builds it)")


def assert_same(path: str, fmt: str) -> Listing:
    fast = listing.build(path, fmt)
    assert fast is not None
    assert fast == python_listing(path, fmt)
    return fast


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("path", SYSTEM)
def test_listing_equals_python_on_system_binaries(path: str, fmt: str) -> None:
    if not os.path.exists(path):
        need(False, f"{path} is not installed", optional=True)  # libLLVM: only where make bench ran
    made = assert_same(path, fmt)
    assert made.functions > 1000


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("name", FIXTURES)
def test_listing_equals_python_on_fixtures(built: Built, name: str, fmt: str) -> None:
    assert_same(str(built[name]), fmt)


@pytest.mark.parametrize("name", SYMBOL_FIXTURES)
def test_listing_equals_python_with_debug_files_and_go_table(sym: Built, name: str) -> None:
    made = assert_same(str(sym[name]), "json")
    assert set(made.sources) & {"debuglink", "minidebuginfo", "pclntab"}  # the source under test was read


def test_libc_with_its_build_id_debug_file() -> None:
    made = assert_same(LIBC, "text")
    assert made.sources["build-id"] > 1000 and made.debug_files[0][0] == "build-id"


def tables_of(path: str) -> Iterator[tuple[bytes, bytes, bool, str]]:
    e = open_elf(path)
    for sec in e.sections:
        if sec.type in (2, 11) and sec.link < len(e.sections):
            yield e.section_data(sec), e.section_data(e.sections[sec.link]), e.is64, e.endian


def python_functions(data: bytes, strtab: bytes, is64: bool, endian: str) -> list[tuple[object, ...]]:
    saved, speedups.module = speedups.module, None
    try:
        return symtab.functions(data, strtab, is64, endian, "x")
    finally:
        speedups.module = saved


@pytest.mark.parametrize("path", [LIBC, "/usr/sbin/dockerd", os.path.realpath("/usr/bin/python3")])
def test_functions_equals_python(path: str) -> None:
    for data, strtab, is64, endian in tables_of(path):
        assert symtab.functions(data, strtab, is64, endian, "x") == python_functions(data, strtab, is64, endian)


AWKWARD = [
    "plain",
    'quote"d',
    "back\\slash",
    "tab\there",
    "trailing ",
    "trailing\t\x0b",
    "caf\u00e9",
    "\u4e2d\u6587",
    "nbsp\u00a0",  # a non-ASCII space at the end: Python's rstrip decides (None)
    "",
    "\x7f",
]


@pytest.mark.parametrize("is64,big", [(True, False), (False, False), (True, True), (False, True)])
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_awkward_names_in_every_layout(tmp_path: Path, is64: bool, big: bool, fmt: str) -> None:
    funcs = [(n, 0x400010 + 16 * (i % 4), i) for i, n in enumerate(AWKWARD)]
    path = tmp_path / "awkward"
    path.write_bytes(elfgen.build(funcs, is64=is64, big=big, dynamic=funcs[:5]))
    fast = listing.build(str(path), fmt)
    if fmt == "text":
        assert fast is None  # "nbsp\u00a0": left to Python, which strips it
        return
    assert fast == python_listing(str(path), fmt)


def test_names_that_are_not_utf8_go_to_python(tmp_path: Path) -> None:
    data = elfgen.build([("badQQname", 0x400010, 8), ("good", 0x400020, 8)])
    path = tmp_path / "bad-utf8"
    path.write_bytes(data.replace(b"badQQname", b"bad\xff\xfename"))
    assert listing.build(str(path), "json") is None
    out = ctrace("symbols", str(path), "-o", "json")  # and the CLI prints Python's rows
    assert out.code == 0 and '"bad\\udcff\\udcfename"' in out.out


def test_cli_output_is_the_same_without_speedups(built: Built) -> None:
    path = str(built["acme"])
    for fmt in ("json", "text"):
        fast = ctrace("--no-cache", "symbols", path, "-o", fmt)
        pure = ctrace("--no-cache", "symbols", path, "-o", fmt, env={**os.environ, "CTRACE_PURE": "1"})
        assert fast.code == pure.code == 0
        assert fast.out == pure.out and "acme::net::Conn::handshake(int)" in fast.out


def test_mutated_files_agree_or_go_to_python(built: Built, tmp_path: Path) -> None:
    """Differential fuzzing: whatever the C code returns for a damaged file is what Python prints."""
    seeds = [
        *(
            elfgen.build([(n, 0x400010 + 8 * i, 4)], is64=a, big=b, dynamic=[("d", 0x400020, 4)])
            for i, n in enumerate(AWKWARD[:4])
            for a, b in [(True, False), (False, True)]
        ),
        built["hello-dyn"].read_bytes(),
        built["cilium-agent-stripped"].read_bytes(),
    ]
    rnd = random.Random(20261201)
    path = str(tmp_path / "case")
    agreed = 0
    for i in range(600):
        Path(path).write_bytes(fuzzing.mutate(seeds[i % len(seeds)], rnd))
        try:
            fast = listing.build(path, "json" if i % 2 else "text")
        except CtraceError:
            with pytest.raises(CtraceError):
                python_listing(path, "json")
            continue
        if fast is not None:
            assert fast == python_listing(path, "json" if i % 2 else "text")
            agreed += 1
    assert agreed > 150  # the mutations left most files readable, so the comparison ran


def test_go_table_checks_send_the_listing_to_python(built: Built, tmp_path: Path) -> None:
    """A functab entry past the end of its name table: _functab32 declines, and so does C."""
    path = str(built["cilium-agent-stripped"])
    from ctrace.elf import pclntab

    source = pclntab.source(open_elf(path))
    assert source[0] == "functab"
    _, data, nfunc, funcs, start, end, text, swap = source
    broken = bytearray(data)
    struct.pack_into(NATIVE + "I", broken, funcs + 4, 2)  # the first _func, no longer 4-aligned
    made = speedups.module.listing(
        [("functab", bytes(broken), nfunc, funcs, start, end, text, swap)], 0, "json", repr, lambda a, b: ("go", {})
    )
    assert made is None
    made = speedups.module.listing([source], 0, "json", repr, lambda a, b: ("go", {}))
    assert made is not None and made[2] == len(pclntab.functions(open_elf(path)))
