"""``--run``: start the chosen bpftrace command with a clean signal path.

Ctrl-C reaches bpftrace through the terminal's process group; ctrace waits for
it to detach its probes and exits 130. ``--duration`` sends bpftrace the same
SIGINT after S seconds, so it prints its maps and detaches as on Ctrl-C.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Sequence

from ctrace.errors import EnvironmentProblem

GRACE = 10.0  # seconds bpftrace gets to detach after SIGINT


def run(argv: Sequence[str], duration: float | None = None) -> int:
    if shutil.which(argv[0]) is None:
        raise EnvironmentProblem(f"{argv[0]} is not installed", f"install it (Debian: apt-get install {argv[0]})")
    # A shell starts background jobs with SIGINT ignored, and Python then leaves it ignored;
    # --run promises Ctrl-C semantics, so take SIGINT back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = subprocess.Popen(list(argv))
    try:
        try:
            return proc.wait(timeout=duration)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return 0
    except KeyboardInterrupt:
        _stop(proc)
        return 130


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
