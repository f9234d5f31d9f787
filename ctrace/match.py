"""Matching ``--func`` patterns against symbol names, most precise tier first.

Tiers: exact name, exact last component (``regenerate`` finds
``github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate``), glob, then
substring. The first tier that matches anything wins, so ``main`` never also
drags in ``main.main`` and ``runtime.main`` when a plain ``main`` exists.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence

from ctrace.errors import UsageError
from ctrace.model import Symbol

_SPLIT = re.compile(r"::|[./]")
_GLOB_CHARS = frozenset("*?[")


def last_component(name: str) -> str:
    """The final element of a Go, C++ or Rust path: 'a/b.(*T).m' -> 'm'."""
    if name.endswith(")") and "(" in name and not name.endswith(").") and "::" in name:
        name = name[: name.index("(")]  # a demangled C++ argument list
    return _SPLIT.split(name)[-1]


def check_pattern(pattern: str) -> str:
    """Refuse patterns no symbol can have; returns the pattern unchanged."""
    if not pattern.strip():
        raise UsageError("--func needs a function name or pattern", "e.g. --func main or --func 'http*'")
    if any(ord(c) < 32 or ord(c) == 127 for c in pattern):
        raise UsageError(
            f"--func {pattern!r} contains a control character", "symbol names are printable; check the quoting"
        )
    return pattern


def match(
    symbols: Sequence[Symbol], pattern: str, aliases: Mapping[str, str] | None = None
) -> tuple[list[Symbol], str]:
    """The symbols ``pattern`` selects and the tier that selected them.

    A symbol with an alias (its demangled C++/Rust name) matches through either name."""
    check_pattern(pattern)
    known = aliases or {}
    pairs = [(s, n) for s in symbols for n in ((s.name, known[s.name]) if s.name in known else (s.name,))]
    tiers: list[tuple[str, Iterable[Symbol]]] = [
        ("exact", (s for s, n in pairs if n == pattern)),
        ("last component", (s for s, n in pairs if last_component(n) == pattern)),
    ]
    if _GLOB_CHARS & set(pattern):
        rx = re.compile(fnmatch.translate(pattern))
        tiers.append(("glob", (s for s, n in pairs if rx.match(n))))
    tiers.append(("substring", (s for s, n in pairs if pattern in n)))
    for tier, found in tiers:
        hits = list(dict.fromkeys(found))
        if hits:
            return hits, tier
    return [], ""


def closest(symbols: Sequence[Symbol], pattern: str, n: int = 5) -> list[str]:
    """Names a typo probably meant, by whole name and by last component."""
    names = sorted({s.name for s in symbols})
    by_last: dict[str, str] = {}
    for name in names:
        by_last.setdefault(last_component(name), name)
    near = difflib.get_close_matches(pattern, list(by_last), n=n, cutoff=0.6)
    found = [by_last[k] for k in near]
    found += [m for m in difflib.get_close_matches(pattern, names, n=n, cutoff=0.6) if m not in found]
    return found[:n]
