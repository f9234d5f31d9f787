"""What a binary offers a uprobe: its functions, build-id, strip state and language."""

from __future__ import annotations

from dataclasses import dataclass

from ctrace.elf.reader import ElfFile, open_elf
from ctrace.model import Symbol

__all__ = ["ElfInfo", "ElfFile", "inspect", "language"]


@dataclass(frozen=True)
class ElfInfo:
    path: str
    symbols: tuple[Symbol, ...]
    build_id: str | None
    stripped: bool
    language: str
    pie: bool

    def sources(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sym in self.symbols:
            counts[sym.source] = counts.get(sym.source, 0) + 1
        return counts


def inspect(path: str) -> ElfInfo:
    elf = open_elf(path)
    symbols = tuple(elf.symbols())
    return ElfInfo(
        path=path,
        symbols=symbols,
        build_id=elf.build_id,
        stripped=elf.stripped,
        language=language(elf, symbols),
        pie=elf.type == 3,  # ET_DYN: a PIE executable or a shared library
    )


_GO_SECTIONS = (".gopclntab", ".go.buildinfo", ".note.go.buildid")


def language(elf: ElfFile, symbols: tuple[Symbol, ...]) -> str:
    """'go', 'rust', 'c++' or 'c', from evidence in the file, strongest first."""
    if any(elf.section(name) for name in _GO_SECTIONS) or any(n == b"Go" for n, _, _ in elf.notes()):
        return "go"
    names = [s.name for s in symbols]
    if any(_is_rust(n) for n in names) or _comment_mentions(elf, b"rustc"):
        return "rust"
    needed = elf.needed()
    if any(n.startswith(("libstdc++", "libc++")) for n in needed) or any(n.startswith("_Z") for n in names):
        return "c++"
    return "c"


def _is_rust(name: str) -> bool:
    if name.startswith("_R") or name.startswith("__rust_") or name == "rust_begin_unwind":
        return True
    # Legacy mangling ends every path in a 17h<16 hex digits>E hash.
    return name.startswith("_ZN") and len(name) > 20 and name[-20:-17] == "17h" and name.endswith("E")


def _comment_mentions(elf: ElfFile, word: bytes) -> bool:
    sec = elf.section(".comment")
    return sec is not None and word in elf.section_data(sec)
