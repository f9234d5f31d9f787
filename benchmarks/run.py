"""`make bench`: ctrace against nm, readelf and `bpftrace -l`, and the goals of issue 6.

Whole-process wall times, commands alternated, medians, ratios within one run
(benchmarks/timing.py). ``--smoke`` is the short version the test suite runs:
libc only, a few runs, the source tree's ctrace, no container.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import subjects
from benchmarks.timing import Stats, compare, load_average

EXTRA_PROCESSES = 2000


@dataclass(frozen=True)
class Goal:
    what: str
    measured: str
    limit: str
    met: bool | None  # None: could not be measured here
    note: str = ""


@dataclass(frozen=True)
class Setup:
    python: str
    ctrace: list[str]
    env: dict[str, str]
    runs: int
    smoke: bool
    work: Path
    floor_ms: float = 0.0  # the interpreter plus pip's wrapper: no ctrace run is faster


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def ratio(a: Stats, b: Stats) -> float:
    return a.median_ms / b.median_ms


def cell(s: Stats, anchor: Stats | None = None) -> str:
    return f"{s.median_ms:.0f} ms" + (f" ({ratio(s, anchor):.2f}x)" if anchor else "")


def count_functions(setup: Setup, path: str) -> int:
    """Symbol rows of `ctrace symbols -o json`, counted line by line.

    Never parsed whole: a child's peak RSS (wait4) starts from this runner's own
    high-water mark, which parsing dockerd's 7 MB of JSON would raise to ~60 MB.
    """
    argv = [*setup.ctrace, "symbols", path, "-o", "json"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=setup.env) as proc:
        assert proc.stdout is not None
        return sum(1 for line in proc.stdout if line.startswith('    {"name": '))


def symbol_listing(setup: Setup, goals: list[Goal]) -> None:
    bpftrace = shutil.which("bpftrace") is not None and os.geteuid() == 0
    header = ["binary", "MB", "functions", "nm", "ctrace (x nm)", "cached (x nm)", "pure Python (x nm)", "nm -C"]
    header += ["readelf -sW", "ctrace RSS"] + (["bpftrace -l"] if bpftrace else [])
    rows = []
    for b in subjects.binaries(setup.smoke):
        nm_argv = subjects.nm_argv(b.path)
        commands = {
            "nm": nm_argv,
            "ctrace": [*setup.ctrace, "--no-cache", "symbols", b.path, "-o", "json"],
            "cached": [*setup.ctrace, "symbols", b.path, "-o", "json"],  # the warm-up run fills the cache
            # without the C speedups (env(1) adds ~1 ms); nm -C demangles, as ctrace does
            "pure": ["env", "CTRACE_PURE=1", *setup.ctrace, "--no-cache", "symbols", b.path, "-o", "json"],
            "nm -C": [nm_argv[0], "-C", *nm_argv[1:]],
            "readelf": ["readelf", "-sW", b.path],
        }
        if bpftrace:
            commands["bpftrace"] = ["bpftrace", "-l", f"uprobe:{b.path}:*"]
        got = compare(commands, setup.runs, setup.env)
        nm, ct, cached = got["nm"], got["ctrace"], got["cached"]
        row = [b.label, f"{os.path.getsize(b.path) / 1e6:.0f}", str(count_functions(setup, b.path)), cell(nm)]
        row += [cell(ct, nm), cell(cached, nm), cell(got["pure"], nm), cell(got["nm -C"], nm)]
        row += [cell(got["readelf"], nm), f"{ct.rss_mb:.0f} MB"]
        row += [cell(got["bpftrace"], nm)] if bpftrace else []
        rows.append(row)
        limit = 0.6 if b.label in ("dockerd", "containerd") else 1.0
        goals.append(ratio_goal(f"symbols -o json, {b.label}", ct, nm, limit, setup.floor_ms))
        goals.append(ratio_goal(f"second call (cache), {b.label}", cached, nm, 0.3, setup.floor_ms))
        if b.label.startswith("libLLVM"):
            goals.append(Goal("peak RSS, libLLVM", f"{ct.rss_mb:.0f} MB", "<= 120 MB", ct.rss_mb <= 120))
    print(f"\n## Symbol listing (whole process, median of {setup.runs} alternated runs)\n")
    print(table(header, rows))


def ratio_goal(what: str, got: Stats, nm: Stats, limit: float, floor_ms: float) -> Goal:
    """A ratio goal; one whose limit is under the floor of any Python run says so."""
    allowed = limit * nm.median_ms
    note = f"limit {allowed:.0f} ms < floor {floor_ms:.0f} ms" if allowed < floor_ms else ""
    return Goal(what, f"{ratio(got, nm):.2f}x nm", f"<= {limit}x", ratio(got, nm) <= limit, note)


def startup(setup: Setup, goals: list[Goal]) -> float:
    """``ctrace --help`` and the floor of any run; returns the floor (ms)."""
    commands = {
        "help": [*setup.ctrace, "--help"],
        "python": [setup.python, "-c", "pass"],
        "floor": [setup.python, "-c", "import re"],  # what pip's console-script wrapper runs before ctrace
    }
    got = compare(commands, setup.runs, setup.env)
    help_ms = got["help"].median_ms
    print(f"\n`ctrace --help`: {help_ms:.0f} ms (its interpreter's `python -c pass`: {got['python'].median_ms:.0f} ms)")
    print(
        f"Floor of any `ctrace` run: {got['floor'].median_ms:.0f} ms, the interpreter plus the `import re` "
        "of pip's console-script wrapper, before ctrace's first line."
    )
    goals.append(Goal("ctrace --help", f"{help_ms:.0f} ms", "<= 60 ms", help_ms <= 60))
    return float(got["floor"].median_ms)


def host_target(setup: Setup, goals: list[Goal]) -> None:
    """Imports of `ctrace target` on a host process, and name resolution among many processes."""
    hello = subjects.build_hello(setup.work)
    with subjects.running([str(hello)]) as (proc,):
        modules = subjects.imported_modules(setup.python, ["target", f"pid:{proc.pid}", "--func", "hello"], setup.work)
        heavy = sorted(modules & {"kubernetes", "docker", "elftools"})
        print(f"\n`ctrace target pid:N` imports of kubernetes, docker, elftools: {', '.join(heavy) or 'none'}")
        goals.append(Goal("target on a host process imports", ", ".join(heavy) or "none", "none", not heavy))
        extra = 50 if setup.smoke else EXTRA_PROCESSES
        with subjects.running(["sleep", "600"], extra):
            argv = [*setup.ctrace, "target", hello.name, "--func", "hello", "-o", "json"]
            got = compare({"by name": argv, "pgrep": ["pgrep", "-x", hello.name[:15]]}, setup.runs, setup.env)
    ms = got["by name"].median_ms
    print(
        f"\n`ctrace target NAME` with {extra} extra processes: {ms:.0f} ms (pgrep -x: {got['pgrep'].median_ms:.0f} ms)"
    )
    goals.append(Goal(f"target by name, +{extra} processes", f"{ms:.0f} ms", "<= 120 ms", ms <= 120))


def container_target(setup: Setup, goals: list[Goal]) -> None:
    with subjects.go_container() as found:
        if found is None:
            print("\ncontainer: no docker daemon or no /usr/local/bin/docker; skipped")
            goals.append(Goal("target on a container (40 MB Go)", "not measured", "<= 300 ms, <= 0.5x", None))
            return
        name, pid = found
        inspect = f"docker inspect -f '{{{{.State.Pid}}}}' {name} >/dev/null"
        by_hand = f"{inspect} && bpftrace -l 'uprobe:/proc/{pid}/root/usr/bin/docker:*'"
        commands = {
            "ctrace": [*setup.ctrace, "target", name, "--func", "main.main", "-o", "json"],
            "by hand": ["sh", "-c", by_hand],
        }
        got = compare(commands, setup.runs, setup.env)
    ct, hand = got["ctrace"], got["by hand"]
    print(f"\n`ctrace target {name}` (container by name, 42 MB Go, cached): {cell(ct, hand)} of the by-hand chain")
    met = ct.median_ms <= 300 and ratio(ct, hand) <= 0.5
    goals.append(
        Goal(
            "target on a container (42 MB Go, by name)",
            f"{ct.median_ms:.0f} ms, {ratio(ct, hand):.2f}x",
            "<= 300 ms, <= 0.5x",
            met,
        )
    )


def traced_overhead(setup: Setup, goals: list[Goal]) -> None:
    """The traced program's slowdown under each probe (benchmarks/overhead.py)."""
    from benchmarks import overhead

    got = overhead.report(setup.ctrace, overhead.CALLS, min(setup.runs, 5))
    if got is None:
        print("\noverhead: needs bpftrace, gcc and root; skipped")
        goals.append(Goal("aggregated stacks vs bpftrace's own", "not measured", "<= 1.2x", None))
        return
    text, ratio = got
    print("\n" + text)
    what = "aggregated stacks vs bpftrace's own (traced program's time)"
    goals.append(Goal(what, f"{ratio:.2f}x", "<= 1.2x", ratio <= 1.2))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="libc only, 3 runs, no container (the test suite's run)")
    parser.add_argument("--runs", type=int, help="timed runs per command (default 9; smoke 3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ctrace-bench-") as tmp:
        work = Path(tmp)
        if not args.smoke:
            subjects.ensure_llvm()
        python, ctrace = subjects.ctrace_command(work, installed=not args.smoke)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}
        setup = Setup(python, ctrace, env, args.runs or (3 if args.smoke else 9), args.smoke, work)
        print(f"# ctrace benchmarks ({load_average()}; ctrace: {' '.join(ctrace)}; {subjects.speedups(python)})")
        goals: list[Goal] = []
        setup = replace(setup, floor_ms=startup(setup, goals))
        symbol_listing(setup, goals)
        host_target(setup, goals)
        if not args.smoke:
            container_target(setup, goals)
            traced_overhead(setup, goals)
        runner_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"\n(RSS is a child's peak, at least this runner's own peak: {runner_mb:.0f} MB)")
        print(f"\n## Goals (issue 6)  [{load_average()}]\n")
        verdict = {True: "met", False: "NOT met", None: "not measured"}
        rows = [[g.what, g.measured, g.limit, verdict[g.met], g.note] for g in goals]
        print(table(["goal", "measured", "limit", "", "note"], rows))
        print("\nfloor: the interpreter plus pip's console-script wrapper, before ctrace's first line")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
