"""The entry point: one run, and the one error handler; parsing is parser.py's, the work commands.py's."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence

from ctrace.cli.parser import build_parser, parse
from ctrace.errors import CtraceError, UsageError
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import NoReturn, TextIO


def program_name(argv0: str) -> str:
    """'kubectl-ctrace' runs as the kubectl plugin and calls itself 'kubectl ctrace'."""
    name = os.path.basename(argv0) or "ctrace"
    if name.startswith("kubectl-"):
        return "kubectl " + name[len("kubectl-") :].replace("_", "-")
    return name if name not in ("__main__.py", "main.py", "-c") else "ctrace"


HIDDEN = "__complete"  # what the completion scripts call; handled before argparse (words may start with '-')


def run() -> NoReturn:
    """The console scripts' entry: main(), then the process ends without the interpreter's
    teardown, which frees every object a listing made one by one (a visible share of a
    big listing's run: benchmarks/README.md) for memory the kernel takes back at once. Output is flushed first;
    every file ctrace writes is closed by its own ``with`` before this point."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (| head): nothing more to say
        pass
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """One run. The cyclic garbage collector is off meanwhile: a run makes 10^5 symbol
    tuples and strings and no cycles worth collecting, and each collection walks them
    all (a visible share of a cold listing of a big binary: benchmarks/README.md); it is
    switched back on for in-process callers."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _main(argv, out)
    finally:
        if collecting:
            gc.enable()


def _main(argv: Sequence[str] | None, out: TextIO | None) -> int:
    out = out or sys.stdout
    args_list = list(sys.argv[1:] if argv is None else argv)
    prog = program_name(sys.argv[0])
    debug = "--debug" in args_list
    try:
        if not args_list:  # as kubectl: a bare command is a request for help, not a mistake
            build_parser(prog).print_help(out)
            return 0
        if args_list[0] == HIDDEN:
            from ctrace.cli import completion

            return completion.serve(args_list[1:], prog, out)
        args = parse(prog, args_list)
        if args.command is None:
            raise UsageError("no command given", f"see '{prog} --help'")
        args.under_kubectl = prog.startswith("kubectl ")
        args.argv = args_list
        from ctrace.cli import commands

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
    if prog != "ctrace":  # hints name commands as the user runs them: 'kubectl ctrace ps'
        hint = hint.replace("'ctrace ", f"'{prog} ")
    sys.stderr.write(f"{prog}: error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
