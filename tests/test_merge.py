"""elf.merge: the fast splice against the plain definition, on random and real symbol sets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ctrace import elf
from ctrace.elf import symtab
from ctrace.model import Symbol


def reference(first: tuple[Symbol, ...], more: list[Symbol]) -> tuple[Symbol, ...]:
    """The definition: first occurrence of each (name, address), in (address, name) order."""
    seen: dict[tuple[str, int], Symbol] = {}
    for sym in (*first, *more):
        seen.setdefault((sym.name, sym.address), sym)
    return tuple(sorted(seen.values(), key=lambda s: (s.address, s.name)))


symbols = st.lists(
    st.builds(
        Symbol,
        st.sampled_from(["a", "b", "c", "main", "f.g", "_Z1fv"]),
        st.integers(0x1000, 0x1010),  # few addresses: many aliases and repeats
        st.integers(0, 64),
        st.sampled_from(["symtab", "dynsym"]),
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(
    symbols,
    st.lists(
        st.builds(
            Symbol,
            st.sampled_from(["a", "b", "x", "y"]),
            st.integers(0x1000, 0x1010),
            st.integers(0, 9),
            st.just("pclntab"),
        ),
        max_size=40,
    ),
)
def test_merge_is_the_definition(raw: list[Symbol], more: list[Symbol]) -> None:
    first = tuple(symtab.sorted_unique(raw))  # what elf.symbols() hands merge
    assert elf.merge(first, more) == reference(first, more)


def test_merge_on_libc_and_its_debug_file() -> None:
    from ctrace.elf import debuginfo
    from ctrace.elf.reader import open_elf

    libc = open_elf("/lib/x86_64-linux-gnu/libc.so.6")
    first = tuple(libc.symbols())
    more = [s for d in debuginfo.collect(libc, "/lib/x86_64-linux-gnu", ("/",)) for s in d.symbols]
    assert len(more) > len(first)  # libc6-dbg's build-id file (hack/setup.sh installs it)
    assert elf.merge(first, more) == reference(first, more)
