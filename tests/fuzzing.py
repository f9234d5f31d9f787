"""Mutations of real and synthetic ELF files, and the property every input must keep.

Property: ``elf.inspect`` on any input returns symbols or raises a CtraceError
(the CLI's clean one-line error); never another exception, never a hang. Where
the C speedups are built, the C listing of the input (elf/listing.build) is
also what the Python path prints, or None (handed back to Python): differential
fuzzing of code that reads untrusted files as root.
Used by tests/test_fuzz.py (a short run in CI) and hack/fuzz.py (the long run).
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ctrace import elf
from ctrace.cli import render
from ctrace.elf import listing, speedups
from ctrace.elf.listing import Listing
from ctrace.errors import CtraceError

EXTREMES = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 1 << 40]
MAX_SECONDS = 2.0  # per input; a real binary of this size takes milliseconds


def _shdr_table(data: bytes) -> tuple[int, int, int, bool, str]:
    is64, e = data[4] == 2, "<" if data[5] == 1 else ">"
    if is64:
        shoff = struct.unpack_from(e + "Q", data, 0x28)[0]
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x3A)
    else:
        shoff = struct.unpack_from(e + "I", data, 0x20)[0]
        shentsize, shnum = struct.unpack_from(e + "HH", data, 0x2E)
    return shoff, shentsize, shnum, is64, e


def flip_bytes(data: bytearray, rnd: random.Random) -> None:
    for _ in range(rnd.randint(1, 8)):
        data[rnd.randrange(len(data))] = rnd.randrange(256)


def truncate(data: bytearray, rnd: random.Random) -> None:
    del data[rnd.randrange(len(data)) :]


def header_field(data: bytearray, rnd: random.Random) -> None:
    """e_shoff, e_phoff, counts, sizes and indexes set to extremes."""
    is64 = data[4] == 2
    fields = [(0x20, "Q"), (0x28, "Q"), (0x36, "H"), (0x38, "H"), (0x3A, "H"), (0x3C, "H"), (0x3E, "H")]
    if not is64:
        fields = [(0x1C, "I"), (0x20, "I"), (0x2A, "H"), (0x2C, "H"), (0x2E, "H"), (0x30, "H"), (0x32, "H")]
    off, code = rnd.choice(fields)
    size = struct.calcsize(code)
    value = rnd.choice(EXTREMES) & ((1 << (8 * size)) - 1)
    endian = "<" if data[5] == 1 else ">"
    struct.pack_into(endian + code, data, off, value)


def section_field(data: bytearray, rnd: random.Random) -> None:
    """A section header's type, offset, size, link or entsize set to extremes."""
    shoff, shentsize, shnum, is64, e = _shdr_table(bytes(data))
    if not shnum or shoff + shnum * shentsize > len(data):
        return flip_bytes(data, rnd)
    base = shoff + rnd.randrange(shnum) * shentsize
    if is64:
        fields = [(4, "I"), (24, "Q"), (32, "Q"), (40, "I"), (56, "Q")]
    else:
        fields = [(4, "I"), (16, "I"), (20, "I"), (24, "I"), (36, "I")]
    off, code = rnd.choice(fields)
    size = struct.calcsize(code)
    struct.pack_into(e + code, data, base + off, rnd.choice(EXTREMES) & ((1 << (8 * size)) - 1))


def unterminate_strings(data: bytearray, rnd: random.Random) -> None:
    """Replace the NULs of a stretch of the file (string tables lose their ends)."""
    start = rnd.randrange(len(data))
    for i in range(start, min(len(data), start + rnd.randint(16, 4096))):
        if data[i] == 0:
            data[i] = 0x41


def ident(data: bytearray, rnd: random.Random) -> None:
    """Class, byte order or machine changed under the rest of the file."""
    data[rnd.choice([4, 5, 18, 19])] = rnd.choice([0, 1, 2, 3, 0xFF])


MUTATIONS: list[Callable[[bytearray, random.Random], None]] = [
    flip_bytes,
    truncate,
    header_field,
    section_field,
    unterminate_strings,
    ident,
]


def mutate(seed: bytes, rnd: random.Random) -> bytes:
    data = bytearray(seed)
    for _ in range(rnd.randint(1, 3)):
        if not data:
            break
        mutation = rnd.choice(MUTATIONS)
        if len(data) < 0x40 and mutation in (header_field, section_field, ident):
            mutation = flip_bytes  # too short to have those fields
        mutation(data, rnd)
    return bytes(data)


@dataclass
class Report:
    cases: int = 0
    parsed: int = 0
    clean_errors: int = 0
    compared: int = 0  # C listings held to the Python one
    slowest: float = 0.0
    crashes: list[str] = field(default_factory=list)


def python_listing(path: str, fmt: str) -> Listing:
    """What ``ctrace symbols PATH`` prints without the C speedups."""
    saved, speedups.module = speedups.module, None
    try:
        info = elf.inspect(path)
    finally:
        speedups.module = saved
    rows = (render.json_rows if fmt == "json" else render.text_rows)(info.symbols, info.demangled)
    text = rows.encode("utf-8", "surrogateescape")
    return Listing(
        info.build_id, info.stripped, info.language, info.sources(), info.debug_files, len(info.symbols), text
    )


def check(data: bytes, path: str, report: Report, fmt: str = "json") -> None:
    """Run one input through elf.inspect (and the C listing) and record how it ended."""
    with open(path, "wb") as f:
        f.write(data)
    start = time.perf_counter()
    try:
        elf.inspect(path)
        report.parsed += 1
    except CtraceError:
        report.clean_errors += 1
    except Exception as err:  # noqa: BLE001 - the property under test
        report.crashes.append(f"{type(err).__name__}: {err}")
    if speedups.module is not None:
        _differential(path, fmt, report)
    elapsed = time.perf_counter() - start
    report.slowest = max(report.slowest, elapsed)
    report.cases += 1
    if elapsed > MAX_SECONDS:
        report.crashes.append(f"slow: {elapsed:.2f}s")


def _differential(path: str, fmt: str, report: Report) -> None:
    try:
        fast = listing.build(path, fmt)
    except CtraceError:
        return  # the same file read in Python raised too (elf.inspect above)
    except Exception as err:  # noqa: BLE001 - the property under test
        report.crashes.append(f"C listing: {type(err).__name__}: {err}")
        return
    if fast is None:
        return  # handed back to Python
    try:
        same = fast == python_listing(path, fmt)
    except CtraceError:
        same = False
    report.compared += 1
    if not same:
        report.crashes.append(f"C listing ({fmt}) differs from Python's")


def run(seeds: list[bytes], cases: int, seed: int, workdir: str) -> Report:
    rnd = random.Random(seed)
    report = Report()
    path = os.path.join(workdir, "case.elf")
    for i in range(cases):
        data = mutate(seeds[i % len(seeds)], rnd)
        check(data, path, report, "json" if i % 2 else "text")
        if len(report.crashes) > 20:
            break
    return report
