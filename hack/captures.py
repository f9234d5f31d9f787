#!/usr/bin/env python3
"""Screens as a user sees them, captured from a real terminal (tmux), into a directory.

    .venv/bin/python hack/captures.py [OUTDIR]      (default: captures/)

Starts what it shows (a C process built from tests/fixtures/src/hello.c and, where docker
answers, a container "ux-store-PID" holding it), then captures:
  bare.txt          `ctrace` with no arguments
  target-wide.txt   `ctrace target pid:N --func hello -o wide`
  ps-wide.txt       `ctrace ps -o wide` (its first lines)
  ps-wide-hello.txt `ctrace ps hello -o wide` (the process and the container's copy)
  complete-bash.txt, complete-zsh.txt   Tab in bash and zsh: container, function, -o, --action, kubectl ctrace
and removes what it started. Needs root, tmux, gcc, zsh and bash-completion (make test installs them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import terminal  # noqa: E402 - the tests' tmux driver, from the source tree


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "captures")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ctrace-captures-"))
    hello = work / "hello"
    subprocess.run(
        ["gcc", "-O0", "-static", "-fno-omit-frame-pointer", "-o", hello, ROOT / "tests/fixtures/src/hello.c"],
        check=True,
    )
    proc = subprocess.Popen([hello], stdout=subprocess.DEVNULL)
    container = start_container(hello, work)
    try:
        time.sleep(0.3)
        with terminal.Terminal(["bash", "--norc", "--noprofile"], width=160, height=50, env={"PS1": "$ "}) as t:
            t.wait(lambda s: s.rstrip().endswith("$"))
            save(out, "bare.txt", shown(t, "ctrace"))
            save(out, "target-wide.txt", shown(t, f"ctrace target pid:{proc.pid} --func hello -o wide"))
            save(out, "ps-wide.txt", shown(t, "ctrace ps -o wide | head -25"))
            save(out, "ps-wide-hello.txt", shown(t, "ctrace ps hello -o wide"))
        save(out, "complete-bash.txt", session(terminal.bash(), proc.pid, container, 2))
        save(out, "complete-zsh.txt", session(terminal.zsh(), proc.pid, container, 1))
    finally:
        proc.kill()
        proc.wait()
        if container:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
            subprocess.run(["docker", "rmi", "-f", f"ctrace-captures/hello:{os.getpid()}"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"captures in {out}/")
    return 0


def start_container(hello: Path, work: Path) -> str | None:
    """A container whose name no process has, as in the issue's `ctrace target ux-st<TAB>`."""
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        return None
    import tarfile

    tar, tag, name = work / "rootfs.tar", f"ctrace-captures/hello:{os.getpid()}", f"ux-store-{os.getpid()}"
    with tarfile.open(tar, "w") as tf:
        tf.add(hello, arcname="hello")
    subprocess.run(["docker", "import", "-c", 'ENTRYPOINT ["/hello"]', tar, tag], check=True, capture_output=True)
    subprocess.run(["docker", "run", "-d", "--name", name, tag], check=True, capture_output=True)
    return name


def shown(t: terminal.Terminal, line: str) -> str:
    t.run("clear")
    return t.run(line)


def session(t: terminal.Terminal, pid: int, container: str | None, to_list: int) -> str:
    """Each completion typed at a fresh prompt; the screen after each Tab, one after another.
    ``to_list``: the Tabs that list the choices (bash: two, zsh: one)."""
    shots = []
    with t:
        for text, tabs in [
            ("ctrace ta", 1),
            ("ctrace target ux-st" if container else "ctrace target hel", 1),
            (f"ctrace target pid:{pid} --func hel", 1),
            ("ctrace target x -o ", to_list),
            (f"ctrace ns {str(pid)[:-1]}", to_list),
            ("kubectl ctrace target --action ", to_list),
            ("kubectl ctrace target --probe uret", 1),
        ]:
            t.run("clear")
            screen = t.complete(text, tabs)
            shots.append(f"# typed {text!r} and {'Tab ' * tabs}".rstrip())
            shots.append(screen.rstrip())
            t.keys("C-c")
            t.settled(0.3)
    return "\n".join(shots)


def save(out: Path, name: str, screen: str) -> None:
    (out / name).write_text(screen.rstrip() + "\n")
    print(f"==> {name}\n{screen.rstrip()}\n")


if __name__ == "__main__":
    raise SystemExit(main())
