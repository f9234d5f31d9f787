"""render.symbols_json is symbols_dict written fast: the two must never drift apart."""

from __future__ import annotations

import io
import json

import pytest

from ctrace import elf
from ctrace.cli import render
from ctrace.model import Binary, Symbol
from tests.conftest import HOSTILE, STAR_T, Built


def as_json(binary: Binary, info: elf.ElfInfo, symbols: list[Symbol]) -> object:
    out = io.StringIO()
    render.symbols_json(binary, info, symbols, out)
    return json.loads(out.getvalue())


@pytest.mark.parametrize("name", ["names", "acme", "hello-stripped", "cilium-agent"])
def test_symbols_json_equals_symbols_dict(built: Built, name: str) -> None:
    path = str(built[name])
    info = elf.inspect(path)
    binary = Binary(path, path, None, info.build_id, info.stripped, info.language)
    for symbols in (list(info.symbols), list(info.symbols[:1]), []):
        assert as_json(binary, info, symbols) == render.symbols_dict(binary, info, symbols)


def test_symbols_json_escapes_every_name() -> None:
    odd = [HOSTILE, STAR_T, 'back\\slash "q"', "tab\there", "caf\u00e9", "bad\udcffbyte", "x\\u0000y"]
    symbols = [Symbol(n, 0x1000 + i, i, "symtab") for i, n in enumerate(odd * 3000)]  # several chunks
    info = elf.ElfInfo("/x", tuple(symbols), None, False, "c", False)
    binary = Binary("/x", "/x", None, None, False, "c")
    text = io.StringIO()
    render.symbols_json(binary, info, symbols, text)
    assert text.getvalue().isascii()
    assert [s["name"] for s in json.loads(text.getvalue())["symbols"]] == [s.name for s in symbols]


@pytest.mark.parametrize("name", ["names", "acme", "hello-dyn", "cilium-agent"])
def test_symbols_text_is_the_table(built: Built, name: str) -> None:
    path = str(built[name])
    info = elf.inspect(path)
    binary = Binary(path, path, None, info.build_id, info.stripped, info.language)
    for symbols in (list(info.symbols), list(info.symbols[-3:]), []):
        fast, slow = io.StringIO(), io.StringIO()
        render.symbols_text(binary, info, symbols, fast)
        shown = [f"{info.demangled[s.name]}  [{s.name}]" if s.name in info.demangled else s.name for s in symbols]
        render.table([[f"{s.address:016x}", str(s.size), s.source, n] for s, n in zip(symbols, shown)], slow)
        header, rows = fast.getvalue().split("\n", 1)
        assert header.startswith(f"# {path}: ") and f" {len(symbols)} functions " in header
        assert rows == slow.getvalue()
