"""What ``ctrace target`` was asked for (Request) and what the planner found (Plan).

The one record handed from the command down through the planner, ``--run``, the
watcher and the stack naming: no argparse ``Namespace`` goes below cli/.
"""

from __future__ import annotations

from ctrace.bpftrace.dialect import Dialect
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from ctrace.model import Remote, Target


DEFAULT_MAX_FUNCS = 100


class Request(Record):
    """What ``ctrace target`` was asked for: handed down whole instead of argument by argument."""

    target: str
    patterns: tuple[str, ...]
    runtime: str | None = None
    max_funcs: int = DEFAULT_MAX_FUNCS
    lib: str | None = None
    probe: str = "uprobe"  # --probe: "uprobe" (the entry), "uretprobe", "return" (a uprobe on each RET)
    action: str = "stack"  # a row of actions.ACTIONS
    tool: str = "bpftrace"
    dialect: Dialect = Dialect()  # the bpftrace that will run the programs
    # --run's options, read by run/ (the watcher, stack naming) and nothing above it
    everything: bool = False  # --all: every target in one program
    duration: float | None = None
    folded: str | None = None
    flamegraph: str | None = None
    argv: tuple[str, ...] = ()  # the command line as typed, for "trace it again" hints
    output: str = "text"  # --run -o json: PROTOCOL.md's lines (agent/local.py)
    program: str | None = None  # -e: the user's own program (agent/program.py), instead of patterns


class Plan(Record):
    targets: list[Target]
    remote: list[Remote]
