"""What tracing costs the traced program: a hot C function under each kind of probe.

benchmarks/hot.c calls ``hot_work`` (a few hundred ns of arithmetic, well over a
million calls a second untraced) N times through two nested calls, after a line
on stdin, and prints the seconds the calls took. Each mode starts a fresh hot
process, attaches its tracer, waits until bpftrace has attached, lets the calls
run, and stops the tracer:

- no probe;
- an empty uprobe (the floor: the kernel's trap and return, no BPF work);
- bpftrace's own ``@[ustack] = count()``;
- ctrace's default program (what ``ctrace target pid:N --func hot_work`` prints);
- ctrace's aggregated stacks (its action counting stacks in the kernel, or, where
  this ctrace has none, the program text ``@[ustack, pid] = count()``).

Modes alternate run by run (a, b, c, ..., a, b, c, ...) and the table gives
medians. Tracer output goes to a pipe that is read and thrown away. Not a test:
nothing asserts a time. ``CTRACE_OVERHEAD_REPORT=FILE`` also writes the table there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
FUNC = "hot_work"
AGGREGATE = "@[ustack, pid] = count();"
ATTACH_TIMEOUT = 60.0
CALLS = 200_000  # per run: ~3 s under a uprobe on a machine where one costs ~14 us
SETTLE = 0.3  # seconds after "Attaching N probes..." before the calls start

Tracer = Callable[[int], list[str] | None]


def build(work: Path) -> Path:
    out = work / "hot"
    subprocess.run(
        ["gcc", "-O2", "-fno-omit-frame-pointer", "-o", str(out), str(HERE / "hot.c")], check=True, capture_output=True
    )
    return out


def printed(ctrace: Sequence[str], pid: int, action: str | None = None) -> list[str]:
    """The command ctrace prints for the hot process (its recommended form)."""
    argv = [*ctrace, "target", f"pid:{pid}", "--func", FUNC, "-o", "json"]
    if action:
        argv += ["--action", action]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return list(json.loads(done.stdout)["targets"][0]["probes"][0]["argv"])


def aggregate_action(ctrace: Sequence[str]) -> str | None:
    """ctrace's own action for stacks counted in the kernel, if this ctrace has one."""
    helptext = subprocess.run([*ctrace, "target", "--help"], capture_output=True, text=True).stdout
    found = re.search(r"--action \{([^}]*)\}", helptext)
    choices = found[1].split(",") if found else []
    return next((a for a in ("stacks", "aggregate", "ustacks") if a in choices), None)


def aggregated(ctrace: Sequence[str], pid: int) -> list[str]:
    action = aggregate_action(ctrace)
    if action is not None:
        return printed(ctrace, pid, action)
    argv = printed(ctrace, pid)
    argv[-1] = argv[-1].replace('printf("%s\\n", ustack);', AGGREGATE)
    return argv


def modes(hot: Path, ctrace: Sequence[str]) -> dict[str, tuple[str, Tracer]]:
    """Label -> (the program, as shown in the table; how to make its argv for a PID)."""
    path = str(hot)

    def own(body: str) -> Tracer:
        return lambda pid: ["bpftrace", "-p", str(pid), "-e", f"uprobe:{path}:{FUNC} {{ {body} }}"]

    action = aggregate_action(ctrace)
    agg_label = f"--action {action}" if action else f"`{AGGREGATE}` (text)"
    return {
        "no probe": ("-", lambda pid: None),
        "empty uprobe (floor)": ("`{ }`", own("")),
        "bpftrace's own stacks": ("`@[ustack] = count();`", own("@[ustack] = count();")),
        "ctrace default": ('as printed: `printf("%s\\n", ustack);`', lambda pid: printed(ctrace, pid)),
        "ctrace aggregated stacks": (agg_label, lambda pid: aggregated(ctrace, pid)),
    }


def _drain(stream: object, attached: threading.Event) -> None:
    for line in stream:  # type: ignore[attr-defined]
        if line.startswith(b"Attaching"):
            attached.set()
    attached.set()  # EOF: it exited


def once(hot: Path, calls: int, tracer: Tracer) -> float:
    """Seconds the calls took with ``tracer`` attached (None: untraced)."""
    proc = subprocess.Popen([str(hot), str(calls)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    trace = None
    try:
        argv = tracer(proc.pid)
        if argv is not None:
            trace = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            attached = threading.Event()
            threading.Thread(target=_drain, args=(trace.stdout, attached), daemon=True).start()
            if not attached.wait(ATTACH_TIMEOUT) or trace.poll() is not None:
                raise RuntimeError(f"{' '.join(argv)} did not attach")
            time.sleep(SETTLE)
        out, _ = proc.communicate("go\n", timeout=600)
        return float(out.strip())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if trace is not None:
            _stop(trace)


def _stop(trace: subprocess.Popen[bytes]) -> None:
    if trace.poll() is None:
        trace.send_signal(signal.SIGINT)
    try:
        trace.wait(timeout=30)
    except subprocess.TimeoutExpired:
        trace.kill()
        trace.wait()


def measure(hot: Path, ctrace: Sequence[str], calls: int, runs: int) -> dict[str, tuple[str, float]]:
    """Median seconds per mode, modes alternated run by run."""
    chosen = modes(hot, ctrace)
    got: dict[str, list[float]] = {label: [] for label in chosen}
    for _ in range(runs):
        for label, (_, tracer) in chosen.items():
            got[label].append(once(hot, calls, tracer))
    return {label: (chosen[label][0], statistics.median(got[label])) for label in chosen}


def table(results: dict[str, tuple[str, float]], calls: int) -> str:
    base = results["no probe"][1]
    floor = results["empty uprobe (floor)"][1]
    own = results["bpftrace's own stacks"][1]
    lines = [
        "| mode | program | calls/s | slowdown (x no probe) | x empty uprobe | x bpftrace's own stacks |",
        "|---|---|---|---|---|---|",
    ]
    for label, (program, secs) in results.items():
        lines.append(
            f"| {label} | {program} | {calls / secs / 1e6:.2f} M | {secs / base:.2f}x | {secs / floor:.2f}x "
            f"| {secs / own:.2f}x |"
        )
    return "\n".join(lines)


def goal(results: dict[str, tuple[str, float]]) -> tuple[float, bool]:
    ratio = results["ctrace aggregated stacks"][1] / results["bpftrace's own stacks"][1]
    return ratio, ratio <= 1.2


def report(ctrace: Sequence[str], calls: int, runs: int) -> tuple[str, float] | None:
    """The markdown section and the goal's ratio, or None where bpftrace cannot run (not root, not installed)."""
    if shutil.which("bpftrace") is None or os.geteuid() != 0 or shutil.which("gcc") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="ctrace-overhead-") as tmp:
        hot = build(Path(tmp))
        untraced = once(hot, calls, lambda pid: None)
        results = measure(hot, ctrace, calls, runs)
    ratio, met = goal(results)
    text = (
        f"## Overhead on the traced program ({FUNC}: {calls:,} calls, {calls / untraced / 1e6:.1f} M calls/s "
        f"untraced; median of {runs} alternated runs; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f})\n\n"
        f"{table(results, calls)}\n\n"
        f"ctrace's aggregated stacks: {ratio:.2f}x bpftrace's own `@[ustack] = count()` "
        f"(goal <= 1.2x: {'met' if met else 'NOT met'})\n"
    )
    path = os.environ.get("CTRACE_OVERHEAD_REPORT")
    if path:
        Path(path).write_text(text)
    return text, ratio


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="few calls, one run (the test suite's run)")
    parser.add_argument("--calls", type=int, help=f"calls per run (default {CALLS}; smoke 20000)")
    parser.add_argument("--runs", type=int, help="runs per mode (default 5; smoke 1)")
    args = parser.parse_args(argv)
    calls = args.calls or (20_000 if args.smoke else CALLS)
    got = report([sys.executable, "-m", "ctrace"], calls, args.runs or (1 if args.smoke else 5))
    print(got[0] if got else "overhead: needs bpftrace, gcc and root; skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
