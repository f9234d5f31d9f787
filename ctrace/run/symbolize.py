"""Name the raw addresses of a user stack from ctrace's own tables.

bpftrace names frames through /proc/PID at print time: a process that has
exited by then (a per-connection backend) gets bare hex, and a bpftrace inside a
container cannot see the target's files at all (bpftrace issue 2671). So ctrace
takes each target's mappings when it attaches (``Maps.take``), maps every file
right away through /proc/PID/map_files (the mapping stays readable after the
process exits, and names the file in the target's mount namespace), and names
frames from its own symbol tables: .symtab/.dynsym, separate debug files, the Go
function table (stripped binaries too). C++ and Rust names are demangled only
for the frames that appear, never a whole library's names.

A frame it cannot name reads ``[file+0xOFFSET]`` (the file offset), as perf does.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Sequence

from ctrace.elf.reader import PT_LOAD, ElfFile, open_elf
from ctrace.errors import CtraceError
from ctrace.proc import procfs
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from ctrace.model import Symbol


class Region(Record):
    """One executable mapping: [start, end) of the address space from ``offset`` of ``path``."""

    start: int
    end: int
    offset: int
    path: str  # as the process sees it
    key: tuple[int, int]  # (device, inode): one Table per file however it is mapped


class Table:
    """Sorted function starts of one file, read on first use."""

    def __init__(self, elf: ElfFile | None, path: str, root: str | None) -> None:
        self.elf = elf
        self.path = path
        self.root = root  # the process's root directory, for debug files inside it
        self._starts: list[int] | None = None
        self._ends: list[int] = []
        self._names: list[str] = []

    def _load(self) -> None:
        self._starts = []
        if self.elf is None:
            return
        rows = sorted({(s.address, s.size, s.name) for s in _functions(self.elf, self.path, self.root)})
        starts = sorted({start for start, _, _ in rows})
        for start, size, name in rows:
            # A symbol without a size (assembly) reaches to the next one, as perf and bpftrace read it.
            following = starts[bisect.bisect_right(starts, start)] if start != starts[-1] else start + 1
            self._starts.append(start)
            self._ends.append(start + size if size else following)
            self._names.append(name)

    def name(self, vaddr: int) -> tuple[str, int] | None:
        """(function, offset into it) of a virtual address of this file."""
        if self._starts is None:
            self._load()
        assert self._starts is not None
        at = bisect.bisect_right(self._starts, vaddr) - 1
        # Aliases share a start; the last of a run with this start is the one found:
        # walk back over a zero-sized or ending-too-early neighbour to one that covers it.
        while at >= 0 and self._starts[at] <= vaddr:
            if vaddr < self._ends[at]:
                return self._names[at], vaddr - self._starts[at]
            if at == 0 or self._starts[at - 1] != self._starts[at]:
                break
            at -= 1
        return None

    def at_offset(self, file_offset: int) -> tuple[str, int] | None:
        """(function, offset into it) of a file offset (perf prints a frame's ip so)."""
        vaddr = self.vaddr(file_offset)
        return self.name(vaddr) if vaddr is not None else None

    def vaddr(self, file_offset: int) -> int | None:
        """The file's virtual address of a file offset, through the PT_LOAD holding it."""
        if self.elf is None:
            return None
        for seg in self.elf.segments:
            if seg.type == PT_LOAD and seg.offset <= file_offset < seg.offset + seg.filesz:
                return file_offset - seg.offset + seg.vaddr
        return None


def file_table(path: str, root: str) -> Table | None:
    """The table of a file a process maps (``path`` as it sees it), opened inside its
    ``root``, else on the host; None when neither is an ELF file ctrace can read."""
    for candidate in (root + path, path):
        try:
            table = Table(open_elf(candidate), path, root)
            table.name(0)  # reads the symbols now, inside the try
        except (CtraceError, OSError):
            continue
        return table
    return None


def _functions(elf: ElfFile, path: str, root: str | None) -> Sequence[Symbol]:
    """A file's functions as elf.inspect finds them, without demangling them all."""
    from ctrace import elf as elf_info

    symbols = tuple(elf.symbols())
    lang = elf_info.language(elf, symbols)
    roots = root if root is not None and os.path.isdir(root) else "/"
    extra, _ = elf_info.extra_sources(elf, symbols, lang, roots, os.path.dirname(path))
    return elf_info.merge(symbols, extra)


class Maps:
    """Each traced process's executable mappings, taken while it runs."""

    def __init__(self, proc_root: str = procfs.PROC) -> None:
        self.proc_root = proc_root
        self.regions: dict[int, list[Region]] = {}
        self.tables: dict[tuple[int, int], Table] = {}
        self.parent: dict[int, int] = {}  # a PID seen only in a stack -> the process whose layout it shares
        self._refreshed: set[int] = set()

    def take(self, pid: int) -> bool:
        """Read /proc/PID/maps and open every mapped executable file; False if it is gone."""
        try:
            text = procfs.read_text(pid, "maps", self.proc_root)
        except CtraceError:
            return False
        regions = []
        root: list[str | None] = []  # the process's root, opened once if a new file needs it
        for m in procfs.parse_maps(text):
            if "x" not in m.perms or not m.path.startswith("/"):
                continue
            path = m.path.removesuffix(procfs.DELETED)
            mapped = f"{self.proc_root}/{pid}/map_files/{m.start:x}-{m.end:x}"
            try:
                st = os.stat(mapped)
                key = (st.st_dev, st.st_ino)
            except OSError:
                key = (-1, m.start)  # unreadable: a table of its own, which names nothing
            regions.append(Region(m.start, m.end, m.offset, path, key))
            if key not in self.tables:
                root = root or [self._root(pid)]
                self.tables[key] = Table(self._open(pid, mapped, path), path, root[0])
        self.regions[pid] = sorted(regions)
        return True

    def _open(self, pid: int, mapped: str, path: str) -> ElfFile | None:
        """The mapped file itself (map_files), else the path in the process's root."""
        for candidate in (mapped, f"{self.proc_root}/{pid}/root{path}"):
            try:
                return open_elf(candidate)
            except (CtraceError, OSError):
                continue
        return None

    def _root(self, pid: int) -> str | None:
        """An open directory fd of the process's root, so debug files inside it stay reachable."""
        return procfs.open_root(pid, self.proc_root)

    def region(self, pid: int, address: int) -> Region | None:
        regions = self.regions.get(pid)
        if regions is None and pid not in self.regions:
            if not self.take(pid):
                self.regions[pid] = self._inherited(pid) or self._twin(pid, address)
            regions = self.regions[pid]
        for r in regions or ():
            if r.start <= address < r.end:
                return r
        if pid not in self._refreshed:  # mapped after attach (dlopen): read the maps again, once
            self._refreshed.add(pid)
            if self.take(pid):
                return self.region(pid, address)
        return None

    def _twin(self, pid: int, leaf: int) -> list[Region]:
        """A process gone before ctrace saw it (forked after attach, exited since): a process
        whose mapping of a position-independent file holds the leaf at the same address shares
        its layout, since ASLR places each exec's files anew and only fork copies them. A fixed
        address (ET_EXEC, or ASLR off) says nothing of the rest: no twin then."""
        if not _randomized():
            return []
        for other in sorted(self.regions):
            r = next((r for r in self.regions[other] if r.start <= leaf < r.end), None)
            elf = self.tables[r.key].elf if r is not None else None
            if r is not None and elf is not None and elf.type == ET_DYN:
                self.parent.setdefault(pid, other)
                return self.regions[other]
        return []

    def ancestors(self, pid: int) -> list[int]:
        """Parents of a child forked after attach, nearest first."""
        out: list[int] = []
        while pid in self.parent and self.parent[pid] not in out and self.parent[pid] != pid:
            pid = self.parent[pid]
            out.append(pid)
        return out

    def _inherited(self, pid: int) -> list[Region]:
        for parent in self.ancestors(pid):
            if self.regions.get(parent):
                return self.regions[parent]
        return []


ET_DYN = 3  # a PIE executable or a shared library: placed anew by each exec under ASLR


def _randomized() -> bool:
    return procfs.aslr()


class Frame(Record):
    address: int
    function: str | None  # mangled, as the table has it
    offset: int  # into the function, or into the file when the function is unknown
    path: str | None


def frames(maps: Maps, pid: int, addresses: Sequence[int]) -> list[Frame]:
    """Leaf-first frames; every frame but the leaf is a return address, looked up one
    byte earlier so a call that ends a function is not named after the next one."""
    out = []
    for i, address in enumerate(addresses):
        out.append(frame(maps, pid, address, address - 1 if i else address))
    return out


def frame(maps: Maps, pid: int, address: int, lookup: int) -> Frame:
    r = maps.region(pid, lookup)
    if r is None:
        return Frame(address, None, address, None)
    table = maps.tables[r.key]
    file_offset = lookup - r.start + r.offset
    vaddr = table.vaddr(file_offset)
    found = table.name(vaddr) if vaddr is not None else None
    if found is None:
        return Frame(address, None, address - r.start + r.offset, r.path)
    return Frame(address, found[0], found[1] + (address - lookup), r.path)


def demangled(names: Iterable[str]) -> dict[str, str]:
    """Readable names of the mangled names among ``names`` only."""
    wanted = {n for n in names if n.startswith(("_Z", "_R"))}
    if not wanted:
        return {}
    from ctrace.elf import demangle

    return demangle.demangle_all(sorted(wanted))


def label(f: Frame, readable: dict[str, str]) -> str:
    """A frame's name for folded stacks: the function, or ``[file+0xOFFSET]`` as perf writes it."""
    if f.function is not None:
        return readable.get(f.function, f.function)
    if f.path is not None:
        return in_file(f.path, f.offset)
    return f"[unknown 0x{f.address:x}]"


def in_file(path: str, offset: int) -> str:
    """``[file+0xOFFSET]``, as perf writes a frame no function covers (bpftrace's and perf's stacks alike)."""
    return f"[{os.path.basename(path)}+0x{offset:x}]"
