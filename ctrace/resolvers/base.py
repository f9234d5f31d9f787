"""What every resolver module provides (pre-commit's lang_base.Language idea)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ctrace.model import Process
from ctrace.procfs import PROC


@dataclass(frozen=True)
class Context:
    """The outside world a resolver may look at, passed in (STYLE.md habit 4)."""

    proc_root: str = PROC
    self_pid: int = 0  # ctrace's own PID, never a target
    cache_dir: str | None = None  # where parsed binaries are cached (elf/cache.py); None: no cache


class Resolver(Protocol):
    """A module that turns a target string into processes."""

    @property
    def NAME(self) -> str: ...

    def claims(self, target: str, ctx: Context) -> bool:
        """Cheap: whether this resolver recognises the target at all."""
        ...

    def resolve(self, target: str, ctx: Context) -> list[Process]:
        """The processes of the target; raises NotFound when there are none."""
        ...
