"""Whether a binary keeps frame pointers, said before a stack is traced.

bpftrace's ``ustack`` walks the chain of saved %rbp values (the kernel's
frame-pointer unwinder). Code built with ``-fomit-frame-pointer`` (gcc's default
at -O1 and above on x86-64; Debian builds nginx, redis, python3.11 and libc so)
uses %rbp as an ordinary register, so the walk stops after the probed frame or
wanders into junk (``0x6461657268742f6f`` is the ASCII "o/thread"). perf's
``--call-graph dwarf`` unwinds from .eh_frame instead, which every x86-64 ELF has.

The evidence is the code itself: a sample of function entries (from
.eh_frame_hdr's table, which a stripped file keeps, else the symbol table) is
read for the ``mov %rsp,%rbp`` that makes %rbp a frame pointer. Go on amd64 always keeps frame pointers
(since Go 1.7). A compiler's recorded switches (DW_AT_producer in .debug_str,
``-fno-omit-frame-pointer`` / ``-fomit-frame-pointer``) are reported when present.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence

from ctrace.elf.reader import ElfFile, open_elf
from ctrace.errors import CtraceError
from ctrace.model import Symbol
from ctrace.proc import procfs
from ctrace.record import Record

PT_GNU_EH_FRAME = 0x6474E550
EM_X86_64 = 62
SAMPLE = 200  # function entries read per file: enough for a stable fraction, cheap on libLLVM
MIN_BODY = 16  # shorter entries are PLT-like thunks and tail-call stubs: no frame either way
WINDOW = 24  # bytes after the entry in which a frame is set up
# mov %rsp,%rbp (two encodings). Not push %rbp: code without frame pointers pushes it too,
# as a callee-saved register; and gcc -O2 schedules other instructions between the two.
FRAME_SETUP = (b"\x48\x89\xe5", b"\x48\x8b\xec")
ENOUGH = 50  # entries of .eh_frame_hdr's table below which the C runtime's own would skew it
# The C runtime's start-up code, linked into every program, built without a frame either way.
CRT = frozenset(
    ("_start", "_init", "_fini", "deregister_tm_clones", "register_tm_clones", "__do_global_dtors_aux", "frame_dummy")
)
KEEPS, OMITS = 0.5, 0.2  # fractions of sampled entries: above KEEPS keeps them, below OMITS omits them


class Verdict(Record):
    path: str
    status: str  # "kept", "omitted", "mixed", "unknown"
    sampled: int
    with_frame: int
    why: str  # the evidence in words
    eh_frame_hdr: bool = True  # the index perf's DWARF unwinder looks functions up in (PT_GNU_EH_FRAME)

    @property
    def lacks(self) -> bool:
        return self.status in ("omitted", "mixed")


def verdict(path: str, language: str = "", symbols: Sequence[Symbol] = ()) -> Verdict:
    """What ``path``'s code says about frame pointers; never raises for an unreadable file."""
    try:
        elf = open_elf(path)
    except (CtraceError, OSError):
        return Verdict(path, "unknown", 0, 0, "the file could not be read")
    return of_elf(elf, path, language, symbols)


def of_elf(elf: ElfFile, path: str, language: str = "", symbols: Sequence[Symbol] = ()) -> Verdict:
    if elf.machine != EM_X86_64:
        return Verdict(path, "unknown", 0, 0, f"frame-pointer check is for x86-64 only (ELF machine {elf.machine})")
    if language == "go":
        return Verdict(path, "kept", 0, 0, "Go keeps frame pointers on amd64")
    own, libc = static_parts(elf, symbols)
    if own:  # a static program: its own code apart from the C library linked after it
        return _judged(elf, path, _spread(own, SAMPLE), f"; the C library linked into it: {_share(elf, libc)}")
    picked = eh_frame_entries(elf)
    if len(picked) < ENOUGH:  # a small program: its own functions, without the C runtime's
        named = sorted({s.address for s in symbols if s.size >= MIN_BODY and s.name not in CRT})
        picked = _spread(named, SAMPLE) if named else picked
    return _judged(elf, path, picked)


# Where glibc's code starts in a static link: the linker places the program's objects
# first and the archive members it pulls from libc.a after them.
LIBC_MARKERS = ("__libc_start_main", "__libc_start_call_main", "__libc_setup_tls")
PT_INTERP = 3


def static_parts(elf: ElfFile, symbols: Sequence[Symbol]) -> tuple[list[int], list[int]]:
    """A statically linked program's own function entries and its C library's, or ([], [])."""
    if any(seg.type == PT_INTERP for seg in elf.segments) or not symbols:
        return [], []
    marks = [s.address for s in symbols if s.name in LIBC_MARKERS]
    if not marks:
        return [], []
    start = min(marks)
    # crtbegin's frame_dummy comes right before the program's objects; .cold parts are
    # continuations of functions (gcc's .text.unlikely, placed first), never entries.
    after = min((s.address for s in symbols if s.name == "frame_dummy"), default=0)
    entries = sorted({s.address for s in symbols if s.size >= MIN_BODY and s.name not in CRT and ".cold" not in s.name})
    # libc.a's members come in archive order, not pull order: libc-start.o's static helpers
    # (call_fini, the cache-info probes) stand before __libc_start_main. The program's own
    # objects end with the one holding main, when main lies in the program's part.
    end = max((s.address for s in symbols if s.name == "main" and after < s.address < start), default=start - 1)
    own = [a for a in entries if after < a <= end]
    return own, _spread([a for a in entries if a >= start], SAMPLE)


def _share(elf: ElfFile, entries: list[int]) -> str:
    hits = sum(1 for vaddr in entries if sets_up_frame(elf, vaddr))
    return f"{hits} of {len(entries)} set up %rbp"


def has_eh_frame_hdr(elf: ElfFile) -> bool:
    return any(seg.type == PT_GNU_EH_FRAME for seg in elf.segments)


def _judged(elf: ElfFile, path: str, picked: list[int], more: str = "") -> Verdict:
    hits = sum(1 for vaddr in picked if sets_up_frame(elf, vaddr))
    if not picked:
        return Verdict(path, "unknown", 0, 0, "no function entries to sample")
    share = hits / len(picked)
    status = "kept" if share >= KEEPS else "omitted" if share < OMITS else "mixed"
    why = f"{hits} of {len(picked)} sampled functions set up %rbp as a frame pointer"
    flag = producer_flag(elf)
    why = f"{why}{f'; compiled with {flag}' if flag else ''}{more}"
    return Verdict(path, status, len(picked), hits, why, has_eh_frame_hdr(elf))


def sets_up_frame(elf: ElfFile, vaddr: int) -> bool:
    off = elf.vaddr_to_offset(vaddr)
    if off is None:
        return False
    head = bytes(elf.data[off : off + WINDOW])
    return any(pattern in head for pattern in FRAME_SETUP)


def _with_room(entries: list[int]) -> list[int]:
    """Entries followed by at least MIN_BODY bytes before the next one."""
    return [a for a, b in zip(entries, entries[1:]) if b - a >= MIN_BODY]


def _spread(items: list[int], n: int) -> list[int]:
    if len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def eh_frame_entries(elf: ElfFile, n: int = SAMPLE) -> list[int]:
    """About ``n`` function starts, spread over .eh_frame_hdr's binary-search table (sorted
    by the linker; found through PT_GNU_EH_FRAME, so a file without section headers works),
    each with at least MIN_BODY bytes before the next. Only the rows sampled are decoded:
    libLLVM's table has 100k."""
    seg = next((s for s in elf.segments if s.type == PT_GNU_EH_FRAME), None)
    if seg is None or seg.offset + seg.filesz > len(elf.data) or seg.filesz < 12:
        return []
    hdr = bytes(elf.data[seg.offset : seg.offset + seg.filesz])
    version, ptr_enc, count_enc, table_enc = hdr[:4]
    # The layout every GNU linker writes: pcrel|sdata4 pointer, udata4 count, datarel|sdata4 table.
    if version != 1 or ptr_enc != 0x1B or count_enc != 0x03 or table_enc != 0x3B:
        return []
    (count,) = struct.unpack_from(elf.endian + "I", hdr, 8)
    count = min(count, (len(hdr) - 12) // 8)
    row = struct.Struct(elf.endian + "i")
    out = []
    for i in {min(int(k * count / n), count - 2) for k in range(n)} if count >= 2 else ():
        start, end = row.unpack_from(hdr, 12 + 8 * i)[0], row.unpack_from(hdr, 20 + 8 * i)[0]
        if end - start >= MIN_BODY:
            out.append(seg.vaddr + start)
    return sorted(out)


def producer_flag(elf: ElfFile) -> str | None:
    """-fno-omit-frame-pointer or -fomit-frame-pointer as the compiler recorded it
    (gcc's -grecord-gcc-switches, on by default, writes DW_AT_producer into .debug_str)."""
    for name in (".debug_str", ".debug_line_str"):
        sec = elf.section(name)
        if sec is None:
            continue
        data = elf.section_view(sec).tobytes()
        for flag in (b"-fno-omit-frame-pointer", b"-fomit-frame-pointer"):
            if flag in data:
                return flag.decode()
    return None


def executable_maps(maps_text: str) -> list[str]:
    """Files mapped executable in a /proc/PID/maps text, in first-seen order."""
    out: dict[str, None] = {}
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
            out.setdefault(parts[5], None)
    return list(out)


def warnings(main: Verdict, libraries: Iterable[Verdict]) -> list[str]:
    """The lines a user reads before a stack is traced."""
    out = []
    name = os.path.basename(main.path)
    if main.lacks:
        way = (
            "for the whole stack use --tool perf --run (perf unwinds with DWARF from .eh_frame)"
            if main.eh_frame_hdr
            else "nor can perf's DWARF unwinder help: the file has no .eh_frame_hdr (a static link has "
            "none unless linked with -Wl,--eh-frame-hdr)"
        )
        out.append(
            f"{name} is built without frame pointers ({main.why}): bpftrace's ustack will stop after "
            f"the first frame or show junk addresses; {way}"
        )
    lacking = [v for v in libraries if v.lacks]
    if lacking:
        names = ", ".join(f"{os.path.basename(v.path)} ({v.with_frame}/{v.sampled})" for v in lacking[:6])
        more = f" and {len(lacking) - 6} more" if len(lacking) > 6 else ""
        out.append(
            f"mapped libraries without frame pointers: {names}{more}: a stack that passes through them "
            "ends there under bpftrace; --tool perf --run unwinds through them with DWARF"
        )
    return out


def target_warnings(exe_path: str, language: str, symbols: Sequence[Symbol], pid: int, proc_root: str) -> list[str]:
    """Frame-pointer warnings for a process's binary (``exe_path`` on the host) and its libraries."""
    main = verdict(exe_path, language, symbols)
    maps = procfs.read_maps(pid, proc_root)
    root = f"{proc_root}/{pid}/root"
    libs = [verdict(root + p) for p in executable_maps(maps) if _is_library(p) and root + p != exe_path]
    return warnings(main, [v._replace(path=v.path.removeprefix(root)) for v in libs])


def _is_library(path: str) -> bool:
    base = os.path.basename(path)
    return ".so" in base and not base.startswith("ld-linux")  # the loader is never on a request's path
