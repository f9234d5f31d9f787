"""``--run``: start the chosen bpftrace command with a clean signal path.

Ctrl-C reaches bpftrace through the terminal's process group; ctrace waits for
it to detach its probes and exits 130. ``--duration`` sends bpftrace the same
SIGINT after S seconds, so it prints its maps and detaches as on Ctrl-C.

The one way ctrace starts, waits for and stops a child (bpftrace, perf record);
the aggregated ``stacks`` action reads what bpftrace prints through ``Watch``
(run/stacks.py ``run_stacks``).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ctrace.errors import EnvironmentProblem
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TextIO


GRACE = 10.0  # seconds bpftrace gets to detach after SIGINT


def start(argv: Sequence[str], **kw: object) -> subprocess.Popen[str]:
    if shutil.which(argv[0]) is None:
        raise EnvironmentProblem(f"{argv[0]} is not installed", f"install it (Debian: apt-get install {argv[0]})")
    # A shell starts background jobs with SIGINT ignored, and Python then leaves it ignored;
    # --run promises Ctrl-C semantics, so take SIGINT back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # errors="replace": a symbol name that is not UTF-8 (a hostile binary's) must not end the reader thread
    return subprocess.Popen(list(argv), text=True, errors="replace", **kw)  # type: ignore[call-overload, no-any-return]


def run(argv: Sequence[str], duration: float | None = None) -> int:
    with spilled(argv) as short:
        return wait(start(short), duration)


LONGEST_ARG = 64 * 1024  # Linux refuses one argument over 128 KiB (MAX_ARG_STRLEN) with E2BIG


@contextmanager
def spilled(argv: Sequence[str]) -> Iterator[list[str]]:
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


def wait(proc: subprocess.Popen[str], duration: float | None, grace: float = GRACE) -> int:
    """The child's status; 0 when ``duration`` ended it, 130 on Ctrl-C (both stop it as Ctrl-C would)."""
    try:
        try:
            return proc.wait(timeout=duration)
        except subprocess.TimeoutExpired:
            stop(proc, grace)
            return 0
    except KeyboardInterrupt:
        stop(proc, grace)
        return 130


def stop(proc: subprocess.Popen[str], grace: float = GRACE) -> None:
    """SIGINT, as Ctrl-C, then ``grace`` seconds to detach and write its output before SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
