"""A progress line on stderr for slow steps: only on a terminal, only after 0.5 s."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TextIO


DELAY = 0.5
FRAMES = "|/-\\"


@contextmanager
def progress(label: str, stream: TextIO | None = None) -> Iterator[None]:
    """Show ``label`` with a spinner while the block runs longer than DELAY seconds."""
    out = stream or sys.stderr
    if not getattr(out, "isatty", lambda: False)():
        yield
        return
    import threading  # only on a terminal

    done = threading.Event()

    def spin() -> None:
        if done.wait(DELAY):
            return
        n = 0
        while not done.wait(0.1):
            out.write(f"\r{FRAMES[n % len(FRAMES)]} {label}")
            out.flush()
            n += 1
        out.write("\r" + " " * (len(label) + 2) + "\r")
        out.flush()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
