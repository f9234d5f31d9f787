"""Completion scripts load in bash and complete targets and function names from the live machine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Built, Processes, ctrace


def bash_complete(words: list[str], bindir: Path) -> list[str]:
    """Run the real completion function for ``words`` (the last one being completed)."""
    script = ctrace("completion", "bash").out
    line = " ".join(f"'{w}'" for w in words)
    program = f"""{script}
COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}
_ctrace
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    out = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, env=env, check=True)
    return out.stdout.split()


@pytest.fixture
def bindir() -> Path:
    path = Path(sys.executable).parent
    if not (path / "ctrace").exists():
        pytest.skip("the ctrace console script is not installed in this environment")
    return path


def test_bash_script_loads() -> None:
    script = ctrace("completion", "bash").out
    out = subprocess.run(["bash", "--norc", "-c", f"{script}\ncomplete -p ctrace"], capture_output=True, text=True)
    assert out.returncode == 0 and "complete -F _ctrace ctrace" in out.stdout


def test_zsh_script_parses() -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    script = ctrace("completion", "zsh").out
    assert subprocess.run(["zsh", "-n", "-c", script]).returncode == 0


def test_completes_commands_targets_and_funcs(built: Built, processes: Processes, bindir: Path) -> None:
    assert bash_complete(["ctrace", "ta"], bindir) == ["target"]
    proc = processes.start(built["stack-unwind"])
    assert "stack-unwind" in bash_complete(["ctrace", "target", "stack-un"], bindir)
    assert f"pid:{proc.pid}" in bash_complete(["ctrace", "target", f"pid:{proc.pid}"], bindir)
    funcs = bash_complete(["ctrace", "target", f"pid:{proc.pid}", "--func", "func_"], bindir)
    assert funcs == ["func_a", "func_b", "func_c"]
