"""Checks and facts about machine code: where a function's entry and returns are.

bpftrace 0.17 cannot check an address probe on a stripped file (it wants --unsafe
and takes a file offset), so ctrace checks instead: an entry must lie inside an
executable PT_LOAD, and a return site must be the start of a RET instruction found
by disassembling the function from its entry (capstone).
"""

from __future__ import annotations

from ctrace.elf.reader import PT_LOAD, ElfFile
from ctrace.errors import NotTraceable
from ctrace.model import Symbol

PF_X = 1
EM_X86_64 = 62
EM_386 = 3
MAX_BODY = 1 << 20  # a bigger "function" is a size we cannot trust


def code_offset(elf: ElfFile, vaddr: int) -> int | None:
    """File offset of ``vaddr`` if it lies in an executable PT_LOAD, else None."""
    for seg in elf.segments:
        if seg.type == PT_LOAD and seg.flags & PF_X and seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
            return vaddr - seg.vaddr + seg.offset
    return None


def returns(elf: ElfFile, sym: Symbol) -> list[int]:
    """Virtual addresses of the RET instructions in ``sym``'s body."""
    if elf.machine not in (EM_X86_64, EM_386):
        raise NotTraceable(
            f"--probe return: disassembly is implemented for x86 only, not ELF machine {elf.machine}",
            "use --probe uretprobe (not for Go)",
        )
    start = code_offset(elf, sym.address)
    if start is None or not 0 < sym.size <= MAX_BODY:
        raise NotTraceable(
            f"{sym.name} has no code body of known size at 0x{sym.address:x}", "probe its entry with --probe uprobe"
        )
    body = bytes(elf.data[start : start + sym.size])
    return _ret_addresses(body, sym.address, elf.machine == EM_X86_64)


def _ret_addresses(body: bytes, address: int, is64: bool) -> list[int]:
    import capstone

    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64 if is64 else capstone.CS_MODE_32)
    # Linear sweep stops at the first undecodable byte: x86 compilers (gcc, Go) do
    # not put data inside function bodies, and padding after the last RET is int3/nop.
    return [addr for addr, _, mnemonic, _ in md.disasm_lite(body, address) if mnemonic in ("ret", "retq")]
