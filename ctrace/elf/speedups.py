"""The optional C module (_speedups.c), or None: not built, or CTRACE_PURE=1.

Every caller has a pure-Python twin it runs when this is None; the tests run
both and compare them (CTRACE_PURE=1 is how a test or a user picks the twin).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import import_module

from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Protocol

    from ctrace.model import Symbol

    Buffer = bytes | memoryview
else:
    Protocol = object  # subclassed for mypy's sake (ctrace/record.py)


class Speedups(Protocol):
    def functions(
        self, table: Buffer, strtab: Buffer, is64: bool, swap: bool, source: str, cls: type[Symbol]
    ) -> list[Symbol]: ...

    def listing(
        self,
        sources: list[tuple[object, ...]],
        own: int,
        fmt: str,
        escape: Callable[[str], str],
        classify: Callable[[list[str], list[str]], tuple[str, dict[str, str] | int]],
    ) -> tuple[bytes, dict[str, int], int, str] | None: ...

    def cxa_demangle(self, names: list[str], fn: int) -> dict[str, str]: ...

    def cxa_address(self) -> int: ...

    def name_kinds(self, names: list[str]) -> tuple[list[str], list[str], list[str], bool]: ...


module: Speedups | None  # loaded on first use (__getattr__): a cache hit never needs it


def __getattr__(name: str) -> Speedups | None:
    if name != "module":
        raise AttributeError(name)
    global module
    module = _load()
    return module


def _load() -> Speedups | None:
    if os.environ.get("CTRACE_PURE", "") not in ("", "0"):
        return None
    try:
        found: Speedups = import_module("ctrace.elf._speedups")
        return found
    except ImportError:
        return None
