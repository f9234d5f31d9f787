"""Symbols as the cache keeps them: a column per field, a Symbol made only when one is asked for.

``ctrace target`` on a cached 35k-function binary reads every name (to match
``--func``) but only a few Symbols: building a tuple for each function was
half of loading the cache entry. Here the names are one
NUL-separated string (no name holds a NUL: every table ends names with one),
addresses and sizes 64-bit arrays, and sources one byte each into their
labels, so a load is a few copies and one split.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from itertools import repeat

from ctrace.elf.symtab import NEW
from ctrace.model import Symbol
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import overload

    Packed = tuple[str, bytes | list[int], bytes | list[int], bytes, tuple[str, ...]]


class Columns(Sequence[Symbol]):
    """``joined`` is every name between NULs, a NUL first and last ("" for none)."""

    __slots__ = ("_joined", "_names", "_addresses", "_sizes", "_sources", "_labels")

    def __init__(
        self, joined: str, addresses: Sequence[int], sizes: Sequence[int], sources: bytes, labels: tuple[str, ...]
    ):
        count = joined.count("\0") - 1 if joined else 0
        if not count == len(addresses) == len(sizes) == len(sources) or (sources and max(sources) >= len(labels)):
            raise ValueError("columns of different lengths")
        self._joined = joined
        self._names: list[str] | None = None
        self._addresses, self._sizes, self._sources, self._labels = addresses, sizes, sources, labels

    @property
    def names(self) -> list[str]:
        """Every name, split out on first use: matching a name (find) needs no list."""
        if self._names is None:
            self._names = self._joined.split("\0")[1:-1] if self._joined else []
        return self._names

    def find(self, name: str) -> list[int]:
        """Indexes of the functions called ``name``: searches of one string, no name split out."""
        joined, needle, out = self._joined, f"\0{name}\0", []
        nuls = counted = 0  # NULs in joined[:counted]
        at = joined.find(needle)
        while at >= 0:
            nuls += joined.count("\0", counted, at)
            counted = at
            out.append(nuls)  # the name after the NUL at ``at``
            at = joined.find(needle, at + 1)  # + 1: two equal names share a NUL
        return out

    def containing(self, part: str) -> list[tuple[int, str]]:
        """(index, name) of every name that holds ``part`` (no NUL in it), in order."""
        joined, out = self._joined, []
        nuls = counted = 0
        at = joined.find(part)
        while at >= 0:
            start, end = joined.rfind("\0", 0, at) + 1, joined.find("\0", at)
            nuls += joined.count("\0", counted, start)
            counted = start
            out.append((nuls - 1, joined[start:end]))
            at = joined.find(part, end + 1)
        return out

    def symbol(self, i: int, name: str) -> Symbol:
        """The Symbol at ``i``, whose name the caller found (find, containing)."""
        return Symbol(name, self._addresses[i], self._sizes[i], self._labels[self._sources[i]])

    def __len__(self) -> int:
        return len(self._sources)

    if TYPE_CHECKING:

        @overload
        def __getitem__(self, i: int) -> Symbol: ...

        @overload
        def __getitem__(self, i: slice) -> tuple[Symbol, ...]: ...

    def __getitem__(self, i: int | slice) -> Symbol | tuple[Symbol, ...]:
        if isinstance(i, slice):
            return tuple(self[j] for j in range(len(self))[i])
        return Symbol(self.names[i], self._addresses[i], self._sizes[i], self._labels[self._sources[i]])

    def __iter__(self) -> Iterator[Symbol]:
        sources = map(self._labels.__getitem__, self._sources)
        return map(NEW, repeat(Symbol), zip(self.names, self._addresses, self._sizes, sources))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(map(tuple.__eq__, self, other))

    __hash__ = None  # type: ignore[assignment]  # equal to tuples it cannot hash like

    def pack(self) -> Packed:
        addresses, sizes = _u64(list(self._addresses)), _u64(list(self._sizes))
        return (self._joined, addresses, sizes, self._sources, self._labels)


def pack(symbols: Sequence[Symbol]) -> Packed:
    """What the cache stores; unpack(pack(s)) == s."""
    if isinstance(symbols, Columns):
        return symbols.pack()  # a hit stored again: no Symbols made
    if not symbols:
        return ("", b"", b"", b"", ())
    names, addresses, sizes, sources = (list(col) for col in zip(*symbols))
    labels = tuple(dict.fromkeys(sources))
    index = {label: i for i, label in enumerate(labels)}
    joined = "\0" + "\0".join(names) + "\0"
    return (joined, _u64(addresses), _u64(sizes), bytes(map(index.__getitem__, sources)), labels)


def unpack(packed: Packed) -> Columns:
    """Raises ValueError or TypeError for a blob of another shape."""
    joined, addresses, sizes, sources, labels = packed
    return Columns(joined, _ints(addresses), _ints(sizes), sources, labels)


def _u64(values: list[int]) -> bytes | list[int]:
    """As 8-byte words where every value fits (a damaged Go table can give a size below 0)."""
    try:
        return array("Q", values).tobytes()
    except OverflowError:
        return values


def _ints(column: bytes | list[int]) -> Sequence[int]:
    if isinstance(column, list):
        return column
    words = array("Q")
    words.frombytes(column)
    return words
