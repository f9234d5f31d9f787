"""Argument parsing and the one error handler; the work is done elsewhere."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn, TextIO

from ctrace import __version__
from ctrace.errors import CtraceError, UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors go through the same one-line handler as the rest."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see '{self.prog} --help'")


def program_name(argv0: str) -> str:
    """'kubectl-ctrace' runs as the kubectl plugin and calls itself 'kubectl ctrace'."""
    name = os.path.basename(argv0) or "ctrace"
    if name.startswith("kubectl-"):
        return "kubectl " + name[len("kubectl-") :].replace("_", "-")
    return name if name not in ("__main__.py", "cli.py") else "ctrace"


def build_parser(prog: str) -> Parser:
    common = Parser(add_help=False)
    common.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    parser = Parser(prog=prog, description="Find the file, PID and symbol to probe, and print the bpftrace command.")
    parser.add_argument("--version", action="version", version=f"ctrace {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument(
        "--no-cache", action="store_true", help="do not read or write the symbol cache (also CTRACE_NO_CACHE=1)"
    )
    parser.add_argument("--proc-root", default="/proc", metavar="DIR", help="where the host's /proc is mounted")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    p = sub.add_parser("target", parents=[common], help="bpftrace commands for functions of a running target")
    p.add_argument("target", help="process name, pid:N or N")
    p.add_argument(
        "--func", action="append", required=True, metavar="PATTERN", help="name, last component, glob or substring"
    )
    p.add_argument("--runtime", help="resolver to use (host)")
    p.add_argument(
        "--max-funcs", type=int, default=100, metavar="N", help="refuse patterns matching more (default 100)"
    )

    p = sub.add_parser("symbols", parents=[common], help="traceable functions of a binary or a target")
    p.add_argument("what", metavar="PATH|TARGET")
    p.add_argument("--func", action="append", metavar="PATTERN", help="only functions matching")
    p.add_argument("--runtime", help="resolver to use (host)")

    p = sub.add_parser("ns", parents=[common], help="PID chain and namespaces of a process")
    p.add_argument("pid", metavar="PID")

    p = sub.add_parser("ps", parents=[common], help="processes with their binary and PID chain")
    p.add_argument("name", nargs="?", help="only processes of this name")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args_list = list(sys.argv[1:] if argv is None else argv)
    prog = program_name(sys.argv[0])
    debug = "--debug" in args_list
    try:
        args = build_parser(prog).parse_args(args_list)
        from ctrace import commands

        return commands.run(args, out)
    except CtraceError as err:
        if debug:
            raise
        _report(prog, err.message, err.hint)
        return err.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # a bug: one line unless --debug
        if debug:
            raise
        _report(prog, f"internal error: {type(err).__name__}: {err}", "rerun with --debug and report the traceback")
        return 1


def _report(prog: str, message: str, hint: str) -> None:
    sys.stderr.write(f"{prog}: error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
