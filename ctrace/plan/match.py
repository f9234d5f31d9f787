"""Matching ``--func`` patterns against symbol names, most precise tier first.

Tiers: exact name, exact last component (``regenerate`` finds
``github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate``), glob, then
substring. The first tier that matches anything wins, so ``main`` never also
drags in ``main.main`` and ``runtime.main`` when a plain ``main`` exists.
"""

from __future__ import annotations

import fnmatch
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress, repeat

from ctrace.elf import names as symbol_names
from ctrace.elf.names import last_component
from ctrace.errors import UsageError
from ctrace.model import Symbol

_GLOB_CHARS = frozenset("*?[")


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

    A symbol with an alias (its demangled C++/Rust name) matches through either name.
    Every tier runs its test over all names in C (map/compress); only names that
    hold the pattern somewhere reach the Python-level last-component test.
    """
    check_pattern(pattern)
    if not aliases:
        fast = _match_names(symbols, pattern)
        if fast is not None:
            return fast
    names = symbol_names.names(symbols)  # not changed: the storage's own list
    owners: Sequence[int] = range(len(symbols))  # names[i] belongs to symbols[owners[i]]
    if aliases:
        extra = [i for i, n in enumerate(names) if n in aliases]
        names = names + [aliases[names[i]] for i in extra]
        owners = [*owners, *extra]

    def among(test: Iterable[object]) -> list[int]:
        return list(compress(owners, test))

    holding: list[list[int]] = []  # the names that hold the pattern, once a tier needs them

    def contains() -> list[int]:
        if not holding:
            holding.append(among(map(operator.contains, names, repeat(pattern))))
        return holding[0]

    tiers: list[tuple[str, Callable[[], list[int]]]] = [
        ("exact", lambda: among(map(pattern.__eq__, names))),
        ("last component", lambda: [i for i in contains() if _last_is(symbols[i], pattern, aliases)]),
    ]
    if _GLOB_CHARS & set(pattern):
        rx = re.compile(fnmatch.translate(pattern))
        tiers.append(("glob", lambda: among(map(rx.match, names))))
    tiers.append(("substring", contains))
    for tier, found in tiers:
        hits = found()
        if hits:
            return [symbols[i] for i in sorted(set(hits))], tier
    return [], ""


def _match_names(symbols: Sequence[Symbol], pattern: str) -> tuple[list[Symbol], str] | None:
    """match() without aliases, through the storage's own searches (elf/names.py): a cached
    binary answers from its joined names, not by splitting out and comparing each name.
    None for the glob tier, which the name-by-name path decides."""
    exact = symbol_names.exact(symbols, pattern)
    if exact:
        return exact, "exact"
    holding = symbol_names.containing(symbols, pattern)
    last = [s for s in holding if last_component(s.name) == pattern]
    if last:
        return last, "last component"
    if _GLOB_CHARS & set(pattern):
        return None
    return holding, "substring" if holding else ""


def loose(pattern: str, hits: Sequence[Symbol], tier: str) -> str | None:
    """A warning when ``--func`` took functions that merely contain the pattern: a user who
    typed a name expects that name, and should hear that it is not there."""
    if tier != "substring":
        return None
    shown = ", ".join(s.name for s in hits[:3]) + (f" and {len(hits) - 3} more" if len(hits) > 3 else "")
    return f"no function is named {pattern!r}: --func took the {len(hits)} whose name contains it ({shown})"


def _last_is(sym: Symbol, pattern: str, aliases: Mapping[str, str] | None) -> bool:
    alias = aliases.get(sym.name) if aliases else None
    return last_component(sym.name) == pattern or (alias is not None and last_component(alias) == pattern)


def closest(symbols: Sequence[Symbol], pattern: str, n: int = 5) -> list[str]:
    """Names a typo probably meant, by whole name and by last component."""
    import difflib  # only for a pattern that matched nothing

    names = sorted({s.name for s in symbols})
    by_last: dict[str, str] = {}
    for name in names:
        by_last.setdefault(last_component(name), name)
    near = difflib.get_close_matches(pattern, list(by_last), n=n, cutoff=0.6)
    found = [by_last[k] for k in near]
    found += [m for m in difflib.get_close_matches(pattern, names, n=n, cutoff=0.6) if m not in found]
    return found[:n]


def select(
    symbols: Sequence[Symbol],
    patterns: Sequence[str],
    aliases: Mapping[str, str] | None = None,
    notes: list[str] | None = None,
) -> tuple[list[Symbol], list[str]]:
    """Symbols matching any pattern (in pattern order, no repeats) and the patterns that matched none.

    ``aliases`` are demangled names, matched as well as the mangled ones; ``notes`` gets
    a line for each pattern that matched only as a substring."""
    chosen: dict[tuple[str, int], Symbol] = {}
    missing = []
    for pattern in patterns:
        hits, tier = match(symbols, pattern, aliases)
        note = loose(pattern, hits, tier)
        if note and notes is not None:
            notes.append(note)
        if not hits:
            missing.append(pattern)
        for sym in hits:
            chosen.setdefault((sym.name, sym.address), sym)
    return list(chosen.values()), missing
