"""--func matching tiers and the names offered after a miss."""

from __future__ import annotations

import pytest

from ctrace.errors import UsageError
from ctrace.match import closest, last_component, match
from ctrace.model import Symbol

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
