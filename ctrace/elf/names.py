"""The names of a symbol list, whatever stores it: what matching and emitting ask.

A list from the cache (``columns.Columns``) answers from its joined names without
making a Symbol per function; any other sequence of Symbols is read name by name.
Callers see four questions and never the storage."""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import compress, repeat
from operator import contains, countOf

from ctrace.elf.columns import Columns
from ctrace.elf.symtab import names_of as names
from ctrace.model import Symbol

__all__ = ["containing", "count", "exact", "last_component", "names"]

_SPLIT = re.compile(r"::|[./]")


def count(symbols: Sequence[Symbol], name: str) -> int:
    """How many functions are called ``name``."""
    if isinstance(symbols, Columns):
        return len(symbols.find(name))  # no name split out
    return countOf(names(symbols), name)


def exact(symbols: Sequence[Symbol], name: str) -> list[Symbol]:
    """The functions called ``name``, in order."""
    if isinstance(symbols, Columns):
        return [symbols.symbol(i, name) for i in symbols.find(name)]
    every = names(symbols)
    return [symbols[i] for i in compress(range(len(every)), map(name.__eq__, every))]


def containing(symbols: Sequence[Symbol], part: str) -> list[Symbol]:
    """The functions whose name holds ``part``, in order."""
    if isinstance(symbols, Columns):
        return [symbols.symbol(i, name) for i, name in symbols.containing(part)]
    every = names(symbols)
    return [symbols[i] for i in compress(range(len(every)), map(contains, every, repeat(part)))]


def last_component(name: str) -> str:
    """The final element of a Go, C++ or Rust path: 'a/b.(*T).m' -> 'm'."""
    if name.endswith(")") and "(" in name and not name.endswith(").") and "::" in name:
        name = name[: name.index("(")]  # a demangled C++ argument list
    return _SPLIT.split(name)[-1]
