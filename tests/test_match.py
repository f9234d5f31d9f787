"""--func matching tiers and the names offered after a miss."""

from __future__ import annotations

import fnmatch
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctrace.bpftrace import sites
from ctrace.elf import columns
from ctrace.errors import UsageError
from ctrace.model import Symbol
from ctrace.plan import match as matching
from ctrace.plan.match import closest, last_component, match

REGEN = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"
SYMS = [
    Symbol(REGEN, 0x1000, 10, "symtab"),
    Symbol("github.com/cilium/cilium/pkg/endpoint.(*Endpoint).Regenerate", 0x1100, 10, "symtab"),
    Symbol("github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate.func1", 0x1200, 10, "symtab"),
    Symbol("main", 0x2000, 10, "symtab"),
    Symbol("main.main", 0x2100, 10, "symtab"),
    Symbol("runtime.main", 0x2200, 10, "symtab"),
    Symbol("_ZN4acme3net4Conn9handshakeEi", 0x3000, 10, "symtab"),
]


@pytest.mark.parametrize(
    ("name", "last"),
    [
        (REGEN, "regenerate"),
        ("main.main", "main"),
        ("acme::net::Conn::handshake(int)", "handshake"),
        ("plain", "plain"),
        ("pkg.(*T).m.func1", "func1"),
    ],
)
def test_last_component(name: str, last: str) -> None:
    assert last_component(name) == last


def names(pattern: str) -> tuple[list[str], str]:
    hits, tier = match(SYMS, pattern)
    return [s.name for s in hits], tier


def test_exact_wins_over_last_component() -> None:
    assert names("main") == (["main"], "exact")


def test_last_component_is_case_sensitive() -> None:
    assert names("regenerate") == ([REGEN], "last component")
    assert names("Regenerate")[0] == ["github.com/cilium/cilium/pkg/endpoint.(*Endpoint).Regenerate"]


def test_glob_then_substring() -> None:
    assert names("*.main") == (["main.main", "runtime.main"], "glob")
    found, tier = names("handshake")
    assert tier == "substring" and found == ["_ZN4acme3net4Conn9handshakeEi"]


def test_no_match_and_closest() -> None:
    assert names("regenrate") == ([], "")
    assert closest(SYMS, "regenrate")[0] == REGEN


@pytest.mark.parametrize("pattern", ["", "   ", "a\nb", "x\x00y", "tab\there"])
def test_bad_patterns(pattern: str) -> None:
    with pytest.raises(UsageError):
        match(SYMS, pattern)


def reference_match(symbols: list[Symbol], pattern: str, aliases: dict[str, str]) -> tuple[list[Symbol], str]:
    """The tiers written plainly, one (symbol, name) pair at a time: what match() must equal."""
    pairs = [(s, n) for s in symbols for n in ((s.name, aliases[s.name]) if s.name in aliases else (s.name,))]
    tiers = [
        ("exact", [s for s, n in pairs if n == pattern]),
        ("last component", [s for s, n in pairs if last_component(n) == pattern]),
    ]
    if set("*?[") & set(pattern):
        rx = re.compile(fnmatch.translate(pattern))
        tiers.append(("glob", [s for s, n in pairs if rx.match(n)]))
    tiers.append(("substring", [s for s, n in pairs if pattern in n]))
    for tier, found in tiers:
        if found:
            return list(dict.fromkeys(found)), tier
    return [], ""


_NAMES = ["main", "main.main", "runtime.main", "a/b.(*T).m", "m", "_ZN1a1mEv", "x::m(int)", "mm", "[m]", "m*"]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_NAMES), st.integers(1, 50)), max_size=25, unique=True),
    st.sampled_from(["main", "m", "m*", "*.m", "a/b.(*T).m", "x::m(int)", "[m]", "ma", "q", "?"]),
    st.booleans(),
)
def test_match_equals_the_plain_tiers(named: list[tuple[str, int]], pattern: str, with_aliases: bool) -> None:
    symbols = [Symbol(n, a, 1, "symtab") for n, a in named]
    aliases = {"_ZN1a1mEv": "a::m()"} if with_aliases else {}
    assert match(symbols, pattern, aliases) == reference_match(symbols, pattern, aliases)


NAMES = ["main", "main.main", "x.main", "a/b.(*T).main", "runtime.main", "mainly", "x", "ns::main", "", "caf\u00e9"]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(NAMES), max_size=14),
    st.sampled_from(["main", "mai", "x", "main.main", "ma*", "*main", "caf\u00e9", "nope", "[mx]*", "a"]),
)
def test_match_on_cached_columns_is_match_on_symbols(names: list[str], pattern: str) -> None:
    """A cache hit (elf/columns.Columns, matched through searches of its joined names) selects
    what the same symbols as a tuple select (name by name)."""
    symbols = tuple(Symbol(n, 0x1000 + 8 * i, 8, "symtab") for i, n in enumerate(names))
    cols = columns.unpack(columns.pack(symbols))
    assert matching.match(cols, pattern) == matching.match(symbols, pattern)
    assert sites.NameIndex(cols).of(pattern) == names.count(pattern)
