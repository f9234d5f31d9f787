"""32-bit, big-endian and non-x86 ELF files: the fast reader against pyelftools."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctrace import elf
from tests import elf_reference as reference
from tests import elfgen

FUNCS = [("alpha", 0x400010, 16), ("beta", 0x400020, 32), ("gamma.part.0", 0x400040, 4)]
LAYOUTS = [
    (True, False, elfgen.EM_X86_64),
    (False, False, elfgen.EM_386),
    (False, False, elfgen.EM_ARM),
    (True, False, elfgen.EM_AARCH64),
    (True, True, elfgen.EM_PPC64),
    (True, True, elfgen.EM_S390),
    (False, True, elfgen.EM_ARM),
]


@pytest.mark.parametrize(("is64", "big", "machine"), LAYOUTS)
def test_layouts_match_pyelftools(tmp_path: Path, is64: bool, big: bool, machine: int) -> None:
    path = tmp_path / "synthetic"
    path.write_bytes(elfgen.build(FUNCS, is64=is64, big=big, machine=machine, dynamic=[("exported", 0x400080, 8)]))
    info = elf.inspect(str(path))
    assert info.symbols == tuple(reference.symbols(str(path)))
    assert [(s.name, s.address, s.size, s.source) for s in info.symbols] == [
        ("alpha", 0x400010, 16, "symtab"),
        ("beta", 0x400020, 32, "symtab"),
        ("gamma.part.0", 0x400040, 4, "symtab"),
        ("exported", 0x400080, 8, "dynsym"),
    ]
    assert info.build_id == "12345678" * 5
    assert info.stripped is False
