"""Which of a binary's names may be mangled, and how (C++'s _Z, Rust's _R and legacy hash):
what the language guess (elf.named_language) and the demangler (demangle.py) both ask.

Apart from elf/__init__ so that demangle.py, which elf/__init__ calls, need not import it back.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress, repeat
from operator import eq, itemgetter

from ctrace.record import Record


class Kinds(Record):
    """The names that may be mangled, by kind."""

    itanium: list[str]  # _Z...: C++, and Rust's legacy mangling
    v0: list[str]  # _R...: Rust v0
    legacy: list[str]  # of itanium, Rust legacy (rust_legacy_names)
    runtime: bool  # a name of Rust's runtime: __rust_*, rust_begin_unwind


def kinds(names: Iterable[str]) -> Kinds:
    """One pass in C over a C++ library's 30k names where the speedups are built: each pass of
    ``map(str.startswith, ...)`` over them walks every name again, and there were six."""
    from ctrace.elf import speedups

    names = names if isinstance(names, list) else list(names)
    module = speedups.module
    return Kinds(*module.name_kinds(names)) if module is not None else _kinds(names)


def _kinds(names: list[str]) -> Kinds:
    """kinds() in Python (the C one's twin)."""
    itanium = list(compress(names, map(str.startswith, names, repeat("_Z"))))
    v0 = list(compress(names, map(str.startswith, names, repeat("_R"))))
    runtime = any(map(str.startswith, names, repeat("__rust_"))) or "rust_begin_unwind" in names
    return Kinds(itanium, v0, rust_legacy_names(itanium), runtime)


_HASH_AT = slice(-20, -17)  # where "17h" starts in a legacy name's "17h<16 hex digits>E" tail


def rust_legacy_names(names: list[str]) -> list[str]:
    """The names with Rust's legacy mangling, ``_ZN...17h<16 characters>E``: the three
    characters 20 from the end of each name compared in C (map), not a regex over their
    join (joining libLLVM's 30k names alone costs more than the test)."""
    tails = compress(names, map(eq, map(itemgetter(_HASH_AT), names), repeat("17h")))
    return [n for n in tails if n.startswith("_ZN") and n.endswith("E") and len(n) > 20]
