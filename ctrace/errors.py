"""One error root for everything a user can cause; the CLI prints it and exits.

Exit codes: 0 ok, 1 not found / not traceable, 2 usage, 3 environment,
130 interrupted (see STYLE.md, habit 3).
"""

from __future__ import annotations


class CtraceError(Exception):
    """Root of every error ctrace reports to the user as one line plus a hint."""

    exit_code = 1
    default_hint = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or self.default_hint


class NotFound(CtraceError):
    """The target, binary or function does not exist."""

    exit_code = 1
    default_hint = "list processes with 'ctrace ps'"


class NotTraceable(CtraceError):
    """The thing exists but cannot be probed (kernel thread, not ELF, ...)."""

    exit_code = 1
    default_hint = "uprobes attach to ELF executables and shared libraries; check the file with 'readelf -h'"


class UsageError(CtraceError):
    """The command line itself is wrong."""

    exit_code = 2
    default_hint = "see 'ctrace --help'"


class EnvironmentProblem(CtraceError):
    """The machine lacks something: permission, a daemon, a tool."""

    exit_code = 3
    default_hint = "run ctrace as root (it needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH)"
