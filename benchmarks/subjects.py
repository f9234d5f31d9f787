"""What the benchmarks run against: binaries found or built, processes, a container.

Everything started here is stopped by the context managers that start it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
LLVM = "/usr/lib/x86_64-linux-gnu/libLLVM-15.so.1"


@dataclass(frozen=True)
class Binary:
    label: str
    path: str


def binaries(smoke: bool) -> list[Binary]:
    """The issue's five binaries, those present (libLLVM is installed by ensure_llvm)."""
    if smoke:
        return [Binary("libc", os.path.realpath(LIBC))]
    found = [
        Binary("docker CLI", "/usr/local/bin/docker"),
        Binary("dockerd", "/usr/sbin/dockerd"),
        Binary("containerd", "/usr/bin/containerd"),
        Binary("libLLVM-15", LLVM),
        Binary("libc", os.path.realpath(LIBC)),
    ]
    return [b for b in found if os.path.exists(b.path)]


def ensure_llvm() -> None:
    """libLLVM-15 is a benchmark subject only, so the runner installs it, not test setup."""
    if os.path.exists(LLVM) or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-qq", "libllvm15"], env=env, check=False, capture_output=True)


def has_symtab(path: str) -> bool:
    out = subprocess.run(["readelf", "-SW", path], capture_output=True, text=True).stdout
    return " .symtab " in out


def nm_argv(path: str) -> list[str]:
    """GNU nm's listing of what ctrace lists: .symtab, or .dynsym (-D) when there is none."""
    return ["nm", "--defined-only", path] if has_symtab(path) else ["nm", "-D", "--defined-only", path]


def ctrace_command(workdir: Path, installed: bool) -> tuple[str, list[str]]:
    """ctrace as a user runs it: a regular (non-editable) install in a scratch venv.

    An editable install adds a meta-path finder that imports pathlib and more at
    every start (~15 ms here), which a user's ``pip install`` does not have.
    ``installed=False`` (the smoke run) uses this interpreter and the source tree.
    Returns the interpreter and the command.
    """
    if not installed:
        return sys.executable, [sys.executable, "-m", "ctrace"]
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(ROOT)]
    subprocess.run(pip, check=True, capture_output=True)
    # Its dependencies from this interpreter's site-packages, without installing them
    # again: a plain path in a .pth is appended to sys.path (its own .pth files, such as
    # the editable finder of the dev install, are not run), so the ctrace just
    # installed is the one imported.
    site = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    here = sysconfig.get_path("purelib")
    Path(site, "ctrace-bench-deps.pth").write_text(here + "\n")
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' leftovers
    return str(venv / "bin" / "python"), [str(venv / "bin" / "ctrace")]


def speedups(python: str) -> str:
    """Whether this ctrace runs with its C speedups (ctrace/elf/_speedups.c)."""
    probe = "from ctrace.elf import speedups; print(speedups.module is not None)"
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.strip()
    return "C speedups built" if out == "True" else "no C speedups: pure Python"


def build_hello(workdir: Path) -> Path:
    """A small C program with a function named ``hello`` (tests/fixtures/src/hello.c)."""
    out = workdir / "ctrace-bench-hello"
    src = ROOT / "tests" / "fixtures" / "src" / "hello.c"
    subprocess.run(["gcc", "-O0", "-o", str(out), str(src)], check=True, capture_output=True)
    return out


@contextmanager
def running(argv: list[str], count: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.3)
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


@contextmanager
def go_container(name: str = "ctrace-bench-go") -> Iterator[tuple[str, int] | None]:
    """A container running the 42 MB static Go docker CLI (it waits at the login prompt).

    Yields (container name, host PID), or None without docker or the binary.
    Built FROM scratch, so no image is pulled.
    """
    cli = "/usr/local/bin/docker"
    if shutil.which("docker") is None or not os.path.exists(cli):
        yield None
        return
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        yield None
        return
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy(cli, f"{ctx}/docker")
        Path(ctx, "Dockerfile").write_text(
            'FROM scratch\nCOPY docker /usr/bin/docker\nENTRYPOINT ["/usr/bin/docker", "login"]\n'
        )
        subprocess.run(["docker", "build", "-q", "-t", "ctrace-bench/go:1", ctx], check=True, capture_output=True)
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    subprocess.run(["docker", "run", "-d", "-it", "--name", name, "ctrace-bench/go:1"], check=True, capture_output=True)
    try:
        pid = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", name], check=True, capture_output=True, text=True
        ).stdout.strip()
        yield name, int(pid)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def imported_modules(python: str, args: list[str], cwd: Path) -> set[str]:
    """Top-level modules a ctrace run imports, from ``python -X importtime``."""
    argv = [python, "-X", "importtime", "-m", "ctrace", *args]
    err = subprocess.run(argv, capture_output=True, text=True, cwd=cwd).stderr
    names = set()
    for line in err.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names
