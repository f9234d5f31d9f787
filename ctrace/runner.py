"""``--run``: start the chosen bpftrace command with a clean signal path.

Ctrl-C reaches bpftrace through the terminal's process group; ctrace waits for
it to detach its probes and exits 130. ``--duration`` sends bpftrace the same
SIGINT after S seconds, so it prints its maps and detaches as on Ctrl-C.

With the aggregated ``stacks`` action (``run_stacks``) ctrace also reads what
bpftrace prints: the kernel counted each (probe, PID, stack) and bpftrace prints
the raw addresses (``ustack(perf)`` starts every frame with its address on 0.17,
0.23 and 0.27 alike), which ctrace names from the mappings it took at attach.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from ctrace.errors import EnvironmentProblem
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import TextIO


GRACE = 10.0  # seconds bpftrace gets to detach after SIGINT


def _start(argv: Sequence[str], **kw: object) -> subprocess.Popen[str]:
    if shutil.which(argv[0]) is None:
        raise EnvironmentProblem(f"{argv[0]} is not installed", f"install it (Debian: apt-get install {argv[0]})")
    # A shell starts background jobs with SIGINT ignored, and Python then leaves it ignored;
    # --run promises Ctrl-C semantics, so take SIGINT back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # errors="replace": a symbol name that is not UTF-8 (a hostile binary's) must not end the reader thread
    return subprocess.Popen(list(argv), text=True, errors="replace", **kw)  # type: ignore[call-overload, no-any-return]


def run(argv: Sequence[str], duration: float | None = None) -> int:
    with _spilled(argv) as short:
        return _wait(_start(short), duration)


LONGEST_ARG = 64 * 1024  # Linux refuses one argument over 128 KiB (MAX_ARG_STRLEN) with E2BIG


@contextmanager
def _spilled(argv: Sequence[str]) -> Iterator[list[str]]:
    """``bpftrace -e PROGRAM`` as ``bpftrace FILE`` when the program is too long for one
    argument (a pattern matching 1,369 functions); the file is removed afterwards."""
    args = list(argv)
    if "-e" not in args or len(args[args.index("-e") + 1]) <= LONGEST_ARG:
        yield args
        return
    at = args.index("-e")
    with tempfile.NamedTemporaryFile("w", prefix="ctrace-", suffix=".bt") as f:
        f.write(args[at + 1] + "\n")
        f.flush()
        yield [*args[:at], *args[at + 2 :], f.name]


def _wait(proc: subprocess.Popen[str], duration: float | None) -> int:
    try:
        try:
            return proc.wait(timeout=duration)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return 0
    except KeyboardInterrupt:
        _stop(proc)
        return 130


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Stack(Record):
    probe: str
    pid: int
    addresses: tuple[int, ...]  # leaf first, as bpftrace prints them
    calls: int


# [0-9]{1,20}: a u64 at most (int() refuses over 4300 digits, and \d takes any script's digits)
_KEY = re.compile(r"@stacks\[(?P<probe>.*), (?P<pid>[0-9]{1,20}), (?P<caller>[0-9]{1,20}), \Z")
_END = re.compile(r"\]: ([0-9]{1,20})\Z")


def parse_stacks(lines: Sequence[str]) -> list[Stack]:
    """The ``@stacks[probe, pid, ustack(perf)]`` entries of bpftrace's map dump."""
    out = []
    key: re.Match[str] | None = None
    frames: list[int] = []
    for line in lines:
        if key is None:
            key = _KEY.match(line)
            frames = []
        elif end := _END.match(line):
            caller = int(key["caller"])
            if caller and frames and frames[1:2] != [caller]:  # emit.STACKS_ENTRY: the caller the walk skipped
                frames[1:1] = [caller]
            out.append(Stack(key["probe"], int(key["pid"]), tuple(frames), int(end[1])))
            key = None
        elif line.startswith("\t") and line.split():
            try:
                frames.append(int(line.split()[0], 16))
            except ValueError:
                pass
    return out


class Watch:
    """bpftrace's output: map dumps kept for naming, the rest shown as it comes."""

    def __init__(self, proc: subprocess.Popen[str], out: TextIO) -> None:
        self.lines: list[str] = []
        self._proc, self._out = proc, out
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        in_map = False
        for raw in self._proc.stdout:
            line = raw.rstrip("\n")
            in_map = in_map or line.startswith("@")
            if in_map:
                self.lines.append(line)
            elif line:
                self._out.write(raw)
                self._out.flush()

    def join(self) -> list[str]:
        self._thread.join(timeout=GRACE)
        return self.lines


class Naming(Record):
    """What the named stacks are labelled with and written to."""

    labels: Mapping[int, str]  # PID -> "comm (container web-1)", for the PIDs ctrace attached to
    functions: Mapping[str, str]  # attach point -> the function's readable name
    title: str
    folded: str | None = None
    flamegraph: str | None = None
    proc_root: str = "/proc"  # --proc-root: the host's /proc as the node agent mounts it


def run_stacks(argv: Sequence[str], duration: float | None, naming: Naming, out: TextIO | None = None) -> int:
    """Run the aggregated-stacks program, then print its stacks named by ctrace."""
    from ctrace import stacks
    from ctrace.symbolize import Maps

    out = out or sys.stdout
    for path in (naming.folded, naming.flamegraph):
        if path:
            stacks.check_writable(path)  # before the run, not after it
    maps = Maps(naming.proc_root)
    for pid in naming.labels:
        maps.take(pid)
    with _spilled(argv) as short:
        proc = _start(short, stdout=subprocess.PIPE)
        watch = Watch(proc, out)
        code = _wait(proc, duration)
    found = stacks.named(parse_stacks(watch.join()), maps, naming)
    if not found and code not in (0, 130):
        return code  # bpftrace failed (its error is on stderr): not "no stacks were recorded"
    stacks.report(found, naming, maps, out)
    stacks.write(found, naming, out)
    return code
