"""elf/names.py answers the same for the cache's columns and a plain tuple, and NameIndex's
glob test agrees with a regular expression on every pattern."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from ctrace.bpftrace import sites
from ctrace.elf import columns, names
from ctrace.model import Symbol

NAMES = st.text(alphabet="ab*(). T", max_size=8)


def symbols(raw: list[str]) -> tuple[Symbol, ...]:
    return tuple(Symbol(n.replace("\0", ""), i + 1, 1, "symtab") for i, n in enumerate(raw))


@given(st.lists(NAMES.filter(bool), max_size=12), NAMES.filter(bool))
def test_columns_and_tuples_agree(raw: list[str], probe: str) -> None:
    plain = symbols(raw)
    stored = columns.unpack(columns.pack(plain))
    for syms in (plain, stored):
        assert names.names(syms) == [s.name for s in plain]
        assert names.count(syms, probe) == [s.name for s in plain].count(probe)
        assert names.exact(syms, probe) == [s for s in plain if s.name == probe]
        assert names.containing(syms, probe) == [s for s in plain if probe in s.name]


@given(NAMES, st.text(alphabet="ab(). T", max_size=10))
def test_glob_is_a_regular_expression(pattern: str, name: str) -> None:
    rx = re.compile(".*".join(re.escape(p) for p in pattern.split("*")) + r"\Z", re.S)
    assert sites._globbed(pattern.split("*"), name) == bool(rx.match(name))


@given(st.lists(NAMES.filter(bool), max_size=12), NAMES.filter(bool))
def test_glob_hits_counts_what_bpftrace_expands(raw: list[str], pattern: str) -> None:
    rx = re.compile(".*".join(re.escape(p) for p in pattern.split("*")) + r"\Z", re.S)
    index = sites.NameIndex(symbols(raw))
    assert index.glob_hits(pattern) == sum(1 for n in raw if rx.match(n))
