"""The agent's child: ``python -m ctrace._agent_child ARGS`` runs ``ctrace ARGS`` in the
process group the agent made for it, and gets SIGTERM when the agent dies
(PR_SET_PDEATHSIG), which kills the whole group at once: with the agent gone nobody
reads the aggregate, and even an agent killed with SIGKILL leaves no trace running."""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1
LOCAL_ONLY = "CTRACE_AGENT_CHILD"  # read by ctrace/fanout/command.py


def main() -> None:
    import ctypes

    parent = os.getppid()
    if os.getpgrp() == os.getpid():  # the agent's own child, leading its group (session.Trace)
        signal.signal(signal.SIGTERM, _end_group)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the agent died before the signal was asked for
        sys.exit(130)
    from ctrace.cli.main import run

    # The agent has placed the pod on this node: its child traces here, never through the agents
    # (a pod the API names but does not show Ready would otherwise go out again, as a laptop's does).
    os.environ[LOCAL_ONLY] = "1"

    sys.argv[0] = "ctrace"  # its errors read "ctrace: error: ...", which the agent relays
    run()


def _end_group(*_: object) -> None:
    os.killpg(0, signal.SIGKILL)  # bpftrace and this process: the kernel detaches their probes


if __name__ == "__main__":
    main()
