"""Every input a user can type that ctrace must refuse: exit code, one-line error, hint, no traceback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, Result, need


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    words: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    prefix: tuple[str, ...] = ()  # e.g. setpriv dropping capabilities


@dataclass(frozen=True)
class World:
    """Things the table needs that exist only at run time."""

    zombie: int
    other_uid: int  # a process of another user
    fifo: str
    text: str
    big_pid: str = "4194305"  # above the kernel's PID_MAX_LIMIT


def _zombie() -> tuple[int, subprocess.Popen[bytes]]:
    # A parent that never waits: its child exits and stays a zombie until the parent dies.
    parent = subprocess.Popen([sys.executable, "-c", "import os, time\nif os.fork() == 0: os._exit(0)\ntime.sleep(60)"])
    for _ in range(100):
        kids = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
        if kids and "Z" in Path(f"/proc/{kids[0]}/stat").read_text().split(")")[1].split()[0]:
            return int(kids[0]), parent
        time.sleep(0.02)
    raise AssertionError("no zombie appeared")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need(os.geteuid() == 0, "the table's permission rows need root to drop privileges")
    tmp = tmp_path_factory.mktemp("bad")
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    refusing = socket.socket(socket.AF_UNIX)  # bound, never listening: connect() is refused
    refusing.bind(f"{fifo}.sock")
    text = tmp / "notes.txt"
    text.write_text("not a binary\n")
    zombie, parent = _zombie()
    other = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "60"])
    time.sleep(0.1)
    yield World(zombie=zombie, other_uid=other.pid, fifo=str(fifo), text=str(text))
    for proc in (parent, other):
        proc.send_signal(signal.SIGKILL)
        proc.wait()


NO_CAPS = ("setpriv", "--inh-caps=-all", "--bounding-set=-all", "--")
T = "target"

ROWS: dict[str, Callable[[World], Case]] = {
    # targets
    "unknown process": lambda w: Case((T, "no-such-process-xyz", "--func", "main"), 1, ("no process named",)),
    "PID gone": lambda w: Case((T, "pid:4194000", "--func", "main"), 1, ("does not exist",)),
    "bare PID gone": lambda w: Case((T, "4194000", "--func", "main"), 1, ("does not exist",)),
    "PID too big": lambda w: Case((T, f"pid:{w.big_pid}", "--func", "main"), 1, ("does not exist",)),
    "pid: not a number": lambda w: Case((T, "pid:abc", "--func", "main"), 2, ("not a PID",)),
    "pid: empty": lambda w: Case((T, "pid:", "--func", "main"), 2, ("not a PID",)),
    "pid: zero": lambda w: Case((T, "pid:0", "--func", "main"), 2, ("not a PID",)),
    "pid: negative": lambda w: Case((T, "pid:-5", "--func", "main"), 2, ("not a PID",)),
    "pid: unicode digits": lambda w: Case((T, "pid:١٢٣", "--func", "main"), 2, ("not a PID",)),
    "kernel thread": lambda w: Case((T, "pid:2", "--func", "main"), 1, ("kernel thread",)),
    "zombie": lambda w: Case((T, f"pid:{w.zombie}", "--func", "main"), 1, ("zombie",)),
    "empty target": lambda w: Case((T, "", "--func", "main"), 2, ("empty",)),
    "blank target": lambda w: Case((T, "   ", "--func", "main"), 2, ("empty",)),
    "no target": lambda w: Case((T, "--func", "main"), 2, ("empty",)),
    "bad KIND/NAME": lambda w: Case((T, "pod/", "--func", "main"), 2, ("KIND/NAME",)),
    "unknown runtime": lambda w: Case((T, "x", "--func", "m", "--runtime", "lxc"), 2, ("unknown runtime",)),
    # --func and other flags
    "no --func": lambda w: Case((T, "x"), 2, ("--func",)),
    "empty --func": lambda w: Case((T, "pid:1", "--func", ""), 2, ("--func",)),
    "blank --func": lambda w: Case((T, "pid:1", "--func", "  "), 2, ("--func",)),
    "newline in --func": lambda w: Case((T, "pid:1", "--func", "a\nb"), 2, ("control character",)),
    "escape in --func": lambda w: Case((T, "pid:1", "--func", "a\x1b[2Jb"), 2, ("control character",)),
    "--max-funcs 0": lambda w: Case((T, "pid:1", "--func", "m", "--max-funcs", "0"), 2, ("--max-funcs",)),
    "--max-funcs word": lambda w: Case((T, "pid:1", "--func", "m", "--max-funcs", "lots"), 2, ("invalid int",)),
    "bad -o": lambda w: Case((T, "x", "--func", "m", "-o", "xml"), 2, ("invalid choice",)),
    "bad timeout": lambda w: Case((T, "pod/x", "--func", "m", "--request-timeout", "0"), 2, ("--request-timeout",)),
    "unknown flag": lambda w: Case((T, "x", "--func", "m", "--frobnicate"), 2, ("unknown flag '--frobnicate'",)),
    "unknown command": lambda w: Case(("nosuchcommand",), 2, ("unknown command 'nosuchcommand'",)),
    "no command": lambda w: Case(("--no-cache",), 2, ("no command given",)),  # bare ctrace: help, exit 0
    # ns / ps
    "ns not a PID": lambda w: Case(("ns", "abc"), 2, ("not a PID",)),
    "ns PID gone": lambda w: Case(("ns", "4194000"), 1, ("does not exist",)),
    "ps bad -o": lambda w: Case(("ps", "-o", "yaml-ish"), 2, ("invalid choice",)),
    # /proc elsewhere
    "--proc-root not procfs": lambda w: Case(("--proc-root", "/tmp", "ps"), 3, ("not a proc filesystem",)),
    "--proc-root missing": lambda w: Case(("--proc-root", "/nonexistent", "ps"), 3, ("not a proc filesystem",)),
    # files as binaries
    "missing file": lambda w: Case(("symbols", "/no/such/file"), 1, ("does not exist",)),
    "relative missing": lambda w: Case(("symbols", "./no-such-binary"), 1, ("does not exist",)),
    "text file": lambda w: Case(("symbols", w.text), 1, ("not an ELF",)),
    "directory": lambda w: Case(("symbols", "/etc"), 1, ("directory",)),
    "char device": lambda w: Case(("symbols", "/dev/null"), 1, ("not a regular file",)),
    "FIFO must not block": lambda w: Case(("symbols", w.fifo), 1, ("not a regular file",)),
    "symbols --func no match": lambda w: Case(("symbols", "/bin/true", "--func", "zzzz_none"), 1, ("no function",)),
    # permissions: root without capabilities, against another user's process
    "no CAP_SYS_PTRACE": lambda w: Case(
        (T, f"pid:{w.other_uid}", "--func", "main"), 3, ("permission denied", "root"), prefix=NO_CAPS
    ),
    "ns without caps": lambda w: Case(("ns", str(w.other_uid)), 3, ("permission denied",), prefix=NO_CAPS),
    # docker daemon
    "docker socket missing": lambda w: Case(
        (T, "no-such-container-x", "--func", "main"),
        3,
        ("cannot talk to the docker daemon",),
        env=(("DOCKER_HOST", "unix:///nonexistent/docker.sock"),),
    ),
    "docker socket refusing": lambda w: Case(
        (T, "no-such-container-x", "--func", "main"),
        3,
        ("Connection refused",),
        env=(("DOCKER_HOST", f"unix://{w.fifo}.sock"),),
    ),
    # Kubernetes configuration
    "missing kubeconfig": lambda w: Case(
        (T, "pod/x", "--func", "f", "--kubeconfig", "/nonexistent"), 3, ("kubeconfig /nonexistent does not exist",)
    ),
    # kubectl skips a missing file in KUBECONFIG: none left is no kubeconfig, not an error (issue 22)
    "KUBECONFIG of missing files": lambda w: Case(
        (T, "pod/x", "--func", "f"),
        1,
        ("no kubeconfig",),
        env=(("KUBECONFIG", "/nonexistent"), ("HOME", "/nonexistent")),
    ),
    # no cluster configured: the pods of this node, from the runtimes' CRI metadata (issue 14)
    "no kubeconfig at all": lambda w: Case(
        (T, "pod/x", "--func", "f"), 1, ("no kubeconfig",), env=(("KUBECONFIG", ""), ("HOME", "/nonexistent"))
    ),
}


def run_case(case: Case) -> Result:
    env = {**os.environ, **dict(case.env)}
    argv = [*case.prefix, sys.executable, "-m", "ctrace", *case.args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_table_is_big_enough() -> None:
    assert len(ROWS) >= 40


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input(world: World, name: str) -> None:
    case = ROWS[name](world)
    if case.prefix and shutil.which(case.prefix[0]) is None:
        need(False, f"{case.prefix[0]} is not installed")
    res = run_case(case)
    assert res.code == case.code, res
    lines = res.err.strip().splitlines()
    assert len(lines) == 2, res.err
    assert lines[0].startswith("ctrace: error: ") and lines[1].startswith("hint: "), res.err
    assert "Traceback" not in res.err
    for word in case.words:
        assert word in res.err, res.err
