"""A real shell in a tmux pane: type into it, press Tab, read the screen as a user sees it.

Used by the completion tests and by hack/captures.py (the screens of the closing note).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

BINDIR = Path(sys.executable).parent  # ctrace, kubectl-ctrace and kubectl_complete-ctrace
PROMPT = "$ "
MARK = "%"  # typed after the Tabs: no completion here offers it
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"  # Debian: bash-completion


class Terminal:
    """One tmux session running ``shell``; killed by close() (or as a context manager)."""

    def __init__(self, shell: Sequence[str], width: int = 160, height: int = 40, env: dict[str, str] | None = None):
        self.name = f"ctrace-term-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        path = f"{BINDIR}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        extra = {"PATH": path, "TERM": "xterm", "HOME": os.environ.get("HOME", "/root"), **(env or {})}
        argv = ["env", "-i", *(f"{k}={v}" for k, v in extra.items()), *shell]
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), shlex.join(argv)],
            check=True,
        )

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)

    def type(self, text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)

    def keys(self, *keys: str) -> None:
        """tmux key names: Tab, Enter, C-c, C-u."""
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def run(self, line: str, timeout: float = 20.0) -> str:
        """Type ``line`` and Enter; the screen once the prompt is back and nothing moves."""
        self.type(line)
        self.keys("Enter")
        self.wait(lambda s: s != "" and _idle(s), timeout)
        return self.settled()

    def screen(self) -> str:
        out = subprocess.run(["tmux", "capture-pane", "-p", "-N", "-t", self.name], capture_output=True, text=True)
        return out.stdout.rstrip("\n")

    def line(self) -> str:
        """The last non-empty line of the screen (where the cursor's line usually is)."""
        lines = [x for x in self.screen().splitlines() if x.strip()]
        return lines[-1] if lines else ""

    def wait(self, done: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        screen = self.screen()
        while not done(screen):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the screen did not change as expected:\n{screen}")
            time.sleep(0.1)
            screen = self.screen()
        return screen

    def complete(self, text: str, tabs: int = 1) -> str:
        """Type ``text``, press Tab ``tabs`` times, and return the screen once the shell is done.

        A shell reads its input in order, so a marker typed after the Tabs shows up once
        the completion has run (a Tab with nothing to add changes nothing to wait for);
        the marker is then erased."""
        self.type(text)
        self.keys(*["Tab"] * tabs)
        self.type(MARK)
        self.wait(lambda s: any(line.rstrip().endswith(MARK) for line in s.splitlines()[-3:]))
        self.keys("BSpace")
        return self.wait(lambda s: not any(line.rstrip().endswith(MARK) for line in s.splitlines()[-3:]))

    def settled(self, quiet: float = 0.5) -> str:
        """The screen once it has not changed for ``quiet`` seconds."""
        last, since = self.screen(), time.monotonic()
        while time.monotonic() - since < quiet:
            time.sleep(0.1)
            now = self.screen()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def clear_line(self) -> None:
        self.keys("C-c")
        self.settled(0.3)
        self.run("clear")


def _idle(screen: str) -> bool:
    return screen.rstrip().endswith(PROMPT.rstrip())


def bash() -> Terminal:
    term = Terminal(["bash", "--norc", "--noprofile"], env={"PS1": PROMPT})
    term.wait(_idle)
    # kubectl's script needs bash-completion's helpers, which a user's login shell loads
    term.run(f"source {BASH_COMPLETION} && source <(ctrace completion bash) && source <(kubectl completion bash)")
    term.run("clear")
    return term


def zsh() -> Terminal:
    term = Terminal(["zsh", "-f"], env={"PS1": PROMPT})
    term.wait(_idle)
    term.run("PS1='$ '; autoload -Uz compinit && compinit -u -D && source <(ctrace completion zsh) && clear")
    term.run("source <(kubectl completion zsh) && clear")
    return term
