"""The progress line: only on a terminal, only for steps slower than half a second, and erased."""

from __future__ import annotations

import io
import time

from ctrace.progress import progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_slow_step_on_a_tty_shows_and_erases() -> None:
    out = Tty()
    with progress("reading the symbols of dockerd...", out):
        time.sleep(0.8)
    text = out.getvalue()
    assert "reading the symbols of dockerd..." in text
    assert text.endswith("\r")  # the line is blanked, so the results start clean


def test_fast_step_or_pipe_shows_nothing() -> None:
    out = Tty()
    with progress("quick", out):
        pass
    assert out.getvalue() == ""
    piped = io.StringIO()
    with progress("slow", piped):
        time.sleep(0.6)
    assert piped.getvalue() == ""
