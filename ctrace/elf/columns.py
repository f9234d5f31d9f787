"""Symbols as the cache keeps them: a column per field, a Symbol made only when one is asked for.

``ctrace target`` on a cached 35k-function binary reads every name (to match
``--func``) but only a few Symbols: building a tuple for each function was
half of loading the cache entry (~5 ms of ~9). Here the names are one
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
    from typing import Union, overload

    Packed = tuple[str, Union[bytes, list[int]], Union[bytes, list[int]], bytes, tuple[str, ...]]


class Columns(Sequence[Symbol]):
    __slots__ = ("names", "_addresses", "_sizes", "_sources", "_labels")

    def __init__(
        self, names: list[str], addresses: Sequence[int], sizes: Sequence[int], sources: bytes, labels: tuple[str, ...]
    ):
        if not len(names) == len(addresses) == len(sizes) == len(sources) or (sources and max(sources) >= len(labels)):
            raise ValueError("columns of different lengths")
        self.names = names  # read by match and emit.NameIndex without making Symbols
        self._addresses, self._sizes, self._sources, self._labels = addresses, sizes, sources, labels

    def __len__(self) -> int:
        return len(self.names)

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
        return ("\0".join(self.names), addresses, sizes, self._sources, self._labels)


def pack(symbols: Sequence[Symbol]) -> Packed:
    """What the cache stores; unpack(pack(s)) == s."""
    if isinstance(symbols, Columns):
        return symbols.pack()  # a hit stored again: no Symbols made
    if not symbols:
        return ("", b"", b"", b"", ())
    names, addresses, sizes, sources = (list(col) for col in zip(*symbols))
    labels = tuple(dict.fromkeys(sources))
    index = {label: i for i, label in enumerate(labels)}
    return ("\0".join(names), _u64(addresses), _u64(sizes), bytes(map(index.__getitem__, sources)), labels)


def unpack(packed: Packed) -> Columns:
    """Raises ValueError or TypeError for a blob of another shape."""
    joined, addresses, sizes, sources, labels = packed
    names = joined.split("\0") if sources else []
    return Columns(names, _ints(addresses), _ints(sizes), sources, labels)


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
