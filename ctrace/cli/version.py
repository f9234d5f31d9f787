"""``ctrace version`` and ``--version``: ctrace's version, and the bpftrace and kernel it writes for."""

from __future__ import annotations

from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TextIO


def versions() -> dict[str, str]:
    """ctrace's version, and the bpftrace and kernel it will emit commands for."""
    import platform
    import shutil
    import subprocess

    from ctrace import __version__

    bpftrace = shutil.which("bpftrace")
    found = "not installed"
    if bpftrace:
        got = subprocess.run([bpftrace, "--version"], capture_output=True, text=True, timeout=10)
        found = f"{(got.stdout.strip() or got.stderr.strip()).removeprefix('bpftrace ')} ({bpftrace})"
    return {"ctrace": __version__, "bpftrace": found, "kernel": platform.release()}


def version_text(out: TextIO, found: dict[str, str] | None = None) -> None:
    out.write("".join(f"{k} {v}\n" for k, v in (found or versions()).items()))


def version(fmt: str, out: TextIO) -> None:
    from ctrace.cli import render

    found = versions()
    render.show(fmt, out, lambda: found, lambda o: version_text(o, found))
