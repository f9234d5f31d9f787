#!/usr/bin/env python3
"""The long fuzz run of the ELF reader: `python hack/fuzz.py --cases 100000`.

Seeds: synthetic 32/64-bit, little/big-endian, non-x86 files (tests/elfgen.py)
plus real binaries given on the command line (or found on this machine).
`--parser NAME` fuzzes another parser instead (bbolt, containerd, cri-o,
containers.json, perf, map-dump: tests/parser_fuzz.py), from its captured seeds
plus the files given (a node's meta.db for bbolt).
Prints the report; exits 1 if any input crashed or took too long.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests import elfgen, fuzzing, parser_fuzz

PARSERS = ["bbolt", "containerd", "cri-o", "containers.json", "perf", "map-dump"]

DEFAULT_REAL = ["/bin/true", "/lib/x86_64-linux-gnu/libm.so.6"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--parser", default="elf", choices=["elf", *PARSERS])
    parser.add_argument("binaries", nargs="*", help="ELF files (or, with --parser, more seed files)")
    args = parser.parse_args()
    if args.parser != "elf":
        return other(args.parser, args.cases, args.seed, args.binaries)
    args.binaries = args.binaries or [p for p in DEFAULT_REAL if os.path.exists(p)]
    seeds = [
        elfgen.build([("f", 0x400010, 8), ("g", 0x400020, 8)], is64=a, big=b, machine=m, dynamic=[("d", 0x400030, 4)])
        for a, b, m in [(True, False, 62), (False, False, 3), (True, True, 21), (False, True, 40), (True, False, 183)]
    ]
    seeds += [open(p, "rb").read() for p in args.binaries]
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        report = fuzzing.run(seeds, args.cases, args.seed, tmp)
    took = time.monotonic() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"seeds: {len(seeds)} ({len(args.binaries)} real: {', '.join(args.binaries)})")
    print(f"cases: {report.cases} in {took:.0f} s; parsed {report.parsed}, clean errors {report.clean_errors}")
    print(f"C listings compared with Python's: {report.compared}")
    print(f"slowest case: {report.slowest * 1000:.1f} ms; peak RSS {rss:.0f} MiB")
    print(f"crashes: {len(report.crashes)}")
    for crash in report.crashes[:20]:
        print(f"  {crash}")
    return 1 if report.crashes else 0


def other(name: str, cases: int, seed: int, files: list[str]) -> int:
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        seeds = parser_fuzz.seeds(name) + [open(p, "rb").read() for p in files]
        report = parser_fuzz.run(parser_fuzz.targets(Path(tmp))[name], seeds, cases, seed)
    print(f"{name}: {len(seeds)} seeds; {report.cases} cases in {time.monotonic() - start:.0f} s")
    print(f"parsed {report.parsed}, clean errors {report.clean_errors}; slowest {report.slowest * 1000:.1f} ms")
    print(f"crashes: {len(report.crashes)}")
    for crash in report.crashes[:20]:
        print(f"  {crash}")
    return 1 if report.crashes else 0


if __name__ == "__main__":
    raise SystemExit(main())
