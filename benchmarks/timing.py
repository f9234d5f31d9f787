"""Whole-process wall time and peak RSS of commands run alternately, reduced to medians.

Commands of one comparison run interleaved (a, b, c, a, b, c, ...) so that a
burst of load from other work on the machine hits all of them alike; ratios
are taken between medians of the same run.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    wall_ms: float
    rss_mb: float  # peak resident set of this one child (wait4's rusage)
    code: int


@dataclass(frozen=True)
class Stats:
    median_ms: float
    rss_mb: float
    runs: int
    codes: frozenset[int]


def run_once(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Sample:
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - start) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    return Sample(wall, usage.ru_maxrss / 1024, proc.returncode)


class Failed(RuntimeError):
    """A timed command failed: its time would measure an error message, not the work."""

    def __init__(self, argv: Sequence[str], code: int, env: Mapping[str, str] | None) -> None:
        err = subprocess.run(list(argv), capture_output=True, text=True, env=env).stderr.strip()
        super().__init__(f"{' '.join(argv)} exited {code}: {err[-500:]}")


def compare(
    commands: Mapping[str, Sequence[str]], runs: int, env: Mapping[str, str] | None = None, warmup: int = 1
) -> dict[str, Stats]:
    """Run every command ``warmup`` + ``runs`` times, alternating; medians of the timed runs."""
    samples: dict[str, list[Sample]] = {name: [] for name in commands}
    for i in range(warmup + runs):
        for name, argv in commands.items():
            sample = run_once(argv, env)
            if sample.code != 0:
                raise Failed(argv, sample.code, env)
            if i >= warmup:
                samples[name].append(sample)
    return {name: summarize(got) for name, got in samples.items()}


def summarize(samples: Sequence[Sample]) -> Stats:
    return Stats(
        median_ms=statistics.median(s.wall_ms for s in samples),
        rss_mb=max(s.rss_mb for s in samples),
        runs=len(samples),
        codes=frozenset(s.code for s in samples),
    )


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"
