"""The same symbol listing through pyelftools: the reference ctrace's own ELF reader must match.

Test code: ctrace never imports pyelftools (a dev dependency), whose import alone
outweighs reading a binary's symbols the fast way (benchmarks/README.md).
"""

from __future__ import annotations

from ctrace.model import Symbol


def symbols(path: str) -> list[Symbol]:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    seen: dict[tuple[str, int], Symbol] = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            if not isinstance(sec, SymbolTableSection) or sec["sh_type"] not in ("SHT_SYMTAB", "SHT_DYNSYM"):
                continue
            source = "symtab" if sec["sh_type"] == "SHT_SYMTAB" else "dynsym"
            for sym in sec.iter_symbols():
                if (
                    sym["st_info"]["type"] in ("STT_FUNC", "STT_LOOS")  # STT_LOOS == STT_GNU_IFUNC
                    and sym["st_value"]
                ):
                    key = (sym.name, sym["st_value"])
                    seen.setdefault(key, Symbol(sym.name, sym["st_value"], sym["st_size"], source))
    return sorted(seen.values(), key=lambda s: (s.address, s.name))
