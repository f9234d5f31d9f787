"""Text output people read: snapshot of stable fields, -o wide, --quiet, yaml/json, colour rules, tmux screen."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from tests.conftest import ROOT, Built, Processes, ctrace, need

SNAPSHOT = """\
{comm}  pid {pid}  host process
  NSpid    {pid}  (host -> innermost PID namespace)
  binary   {path}  (c, not stripped, build-id {build_id})
  host     /proc/{pid}/root{path}

# func_c  (vaddr 0x{address:x}, attached by name)
# bound to PID {pid} and the children it forks later; it stops when PID {pid} exits
bpftrace -e 'BEGIN {{ @ctrace_pids[{pid}] = 1; }} tracepoint:sched:sched_process_fork /@ctrace_pids[pid]/ {{ @ctrace_pids[args->child_pid] = 1; }} tracepoint:sched:sched_process_exit /@ctrace_pids[tid]/ {{ delete(@ctrace_pids[tid]); }} tracepoint:sched:sched_process_exit /tid == {pid}/ {{ exit(); }} uprobe:/proc/{pid}/root{path}:func_c /@ctrace_pids[pid]/ {{ printf("pid=%d func_c%s\\n", pid, ustack); }} END {{ clear(@ctrace_pids); }}'
# other path forms: exe (-o wide shows them)
"""  # noqa: E501 - the command is one line, as printed


def test_text_snapshot(built: Built, processes: Processes, tmp_path: Path) -> None:
    # A copy of its own: other tests run the shared build, which would add a "same file" warning.
    exe = tmp_path / "stack-unwind"
    shutil.copy(built["stack-unwind"], exe)
    proc = processes.start(exe)
    data = ctrace("target", f"pid:{proc.pid}", "--func", "func_c", "-o", "json").json()["targets"][0]
    res = ctrace("target", f"pid:{proc.pid}", "--func", "func_c")
    assert res.code == 0, res.err
    assert res.out == SNAPSHOT.format(
        comm="stack-unwind",
        pid=proc.pid,
        path=exe,
        build_id=data["binary"]["build_id"],
        address=data["probes"][0]["address"],
    )


def test_wide_shows_every_form_and_quiet_only_commands(built: Built, processes: Processes) -> None:
    proc = processes.start(built["stack-unwind"])
    wide = ctrace("target", f"pid:{proc.pid}", "--func", "func_c", "--func", "func_b", "-o", "wide").out
    assert "# or, /proc/PID/exe:" in wide and f"uprobe:/proc/{proc.pid}/exe:func_c" in wide
    quiet = ctrace("target", f"pid:{proc.pid}", "--func", "func_c", "--func", "func_b", "-q").out
    # Several commands: each labelled by a comment line naming its PID and function.
    lines = quiet.splitlines()
    assert lines[0::2] == [f"# {proc.pid} func_c", f"# {proc.pid} func_b"]
    assert all(line.startswith("bpftrace ") and f"@ctrace_pids[{proc.pid}]" in line for line in lines[1::2])
    assert ":func_c " in lines[1] and ":func_b " in lines[3]
    # ...which a shell reads as comments: eval "$(ctrace ... -q)" runs exactly the commands.
    argvs = [p["argv"] for p in targets_json(proc.pid, "func_c", "func_b")[0]["probes"]]
    assert evaluated(quiet) == argvs
    # One command alone is bare.
    one = ctrace("target", f"pid:{proc.pid}", "--func", "func_c", "-q").out
    assert one.count("\n") == 1 and evaluated(one) == argvs[:1]


def evaluated(script: str) -> list[list[str]]:
    """The argv of each bpftrace command a shell's eval of ``script`` runs (bpftrace itself is not run)."""
    shim = 'bpftrace() { printf "%s\\0" bpftrace "$@"; printf "\\n"; }; eval "$(cat)"'
    out = subprocess.run(["bash", "-c", shim], input=script, capture_output=True, text=True, check=True).stdout
    return [line.split("\0")[:-1] for line in out.splitlines()]


def targets_json(pid: int, *funcs: str) -> list[dict[str, object]]:
    res = ctrace("target", f"pid:{pid}", *(f"--func={f}" for f in funcs), "-o", "json")
    assert res.code == 0, res.err
    found: list[dict[str, object]] = res.json()["targets"]
    return found


def test_yaml_and_json_say_the_same(built: Built, processes: Processes) -> None:
    proc = processes.start(built["hello"])
    for cmd in (
        ["target", f"pid:{proc.pid}", "--func", "hello"],
        ["ns", str(proc.pid)],
        ["symbols", str(built["hello"])],
    ):
        as_json = json.loads(ctrace(*cmd, "-o", "json").out)
        as_yaml = yaml.safe_load(ctrace(*cmd, "-o", "yaml").out)
        assert as_yaml == as_json


def run_on_pty(argv: list[str], env: dict[str, str]) -> str:
    """Run a command with a pseudo-terminal as its stdout, as a person would see it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdout=slave, stderr=slave, cwd=ROOT, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait()
    os.close(master)
    return b"".join(chunks).decode()


def test_colour_only_on_a_terminal_and_never_with_no_color(built: Built, processes: Processes) -> None:
    proc = processes.start(built["hello"])
    argv = [sys.executable, "-m", "ctrace", "target", f"pid:{proc.pid}", "--func", "hello"]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    assert "\033[1m" in run_on_pty(argv, env)
    assert "\033[" not in run_on_pty(argv, env | {"NO_COLOR": "1"})
    assert "\033[" not in ctrace("target", f"pid:{proc.pid}", "--func", "hello").out  # a pipe


def test_tmux_screen(built: Built, processes: Processes) -> None:
    """What a person sees in an 160x40 terminal; printed for a human-eye check (pytest -s)."""
    need(shutil.which("tmux") is not None, "tmux is not installed (make test installs it)")
    proc = processes.start(built["cilium-agent"])
    session = f"ctrace-{uuid.uuid4().hex[:6]}"
    cmd = f"{sys.executable} -m ctrace target pid:{proc.pid} --func regenerate; sleep 30"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40", "-c", str(ROOT), cmd], check=True
    )
    try:
        screen = ""
        for _ in range(50):
            time.sleep(0.1)
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            if "bpftrace -e" in screen:
                break
        print(screen)
        assert f"cilium-agent  pid {proc.pid}  host process" in screen
        assert "# github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate" in screen
        # The command starts at the left margin, so copying the line copies exactly the command.
        assert any(line.startswith("bpftrace -e 'BEGIN { @ctrace_pids[") for line in screen.splitlines())
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
