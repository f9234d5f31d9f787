"""Argument parsing and the one error handler; the work is done elsewhere."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence

from ctrace import __version__
from ctrace.errors import CtraceError, UsageError
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import NoReturn, TextIO


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors go through the same one-line handler as the rest."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see '{self.prog} --help'")


class VersionAction(argparse.Action):
    """ctrace's version, and the bpftrace and kernel it will emit commands for."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> NoReturn:
        import platform
        import shutil
        import subprocess

        bpftrace = shutil.which("bpftrace")
        found = "not installed"
        if bpftrace:
            out = subprocess.run([bpftrace, "--version"], capture_output=True, text=True, timeout=10)
            found = f"{(out.stdout.strip() or out.stderr.strip()).removeprefix('bpftrace ')} ({bpftrace})"
        sys.stdout.write(f"ctrace {__version__}\nbpftrace {found}\nkernel {platform.release()}\n")
        parser.exit()


def program_name(argv0: str) -> str:
    """'kubectl-ctrace' runs as the kubectl plugin and calls itself 'kubectl ctrace'."""
    name = os.path.basename(argv0) or "ctrace"
    if name.startswith("kubectl-"):
        return "kubectl " + name[len("kubectl-") :].replace("_", "-")
    return name if name not in ("__main__.py", "cli.py") else "ctrace"


class Formatter(argparse.HelpFormatter):
    """argparse's, without importing shutil (and through it bz2, lzma, fnmatch) for the width."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None):
        if width is None:
            try:
                width = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                try:
                    width = os.get_terminal_size(sys.__stdout__.fileno()).columns if sys.__stdout__ else 80
                except (OSError, ValueError, AttributeError):
                    width = 80
            width -= 2
        super().__init__(prog, indent_increment, max_help_position, width)


def build_parser(prog: str, argv: Sequence[str] | None = None) -> Parser:
    """The whole command line; with ``argv``, only the subcommands named in it are built
    (each argparse parser costs ~0.4 ms), or all of them when it names none. A command
    line that fails to parse is parsed again with all of them (parse), so its error
    lists every command."""
    parser = Parser(
        prog=prog,
        description="Find the file, PID and symbol to probe, and print the bpftrace command.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action=VersionAction, nargs=0, help="show ctrace, bpftrace and kernel versions")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument(
        "--no-cache", action="store_true", help="do not read or write the symbol cache (also CTRACE_NO_CACHE=1)"
    )
    parser.add_argument("--proc-root", default="/proc", metavar="DIR", help="where the host's /proc is mounted")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    named = {name for name, *_ in COMMANDS} & set(argv or ())
    for name, help_text, groups, add in COMMANDS:
        extra = {"help": help_text} if help_text else {}  # no help: not listed in --help
        if named and name not in named:
            continue
        p = sub.add_parser(name, formatter_class=Formatter, **extra)  # type: ignore[arg-type]
        for group in groups:
            group(p)
        add(p)
    return parser


def _output(p: Parser) -> None:
    p.add_argument(
        "-o", "--output", choices=("text", "wide", "json", "yaml"), default="text", help="output format (like kubectl)"
    )


def _cluster(p: Parser) -> None:
    """Which cluster: for the pod lookup, and the reverse lookup of ps and ns."""
    g = p.add_argument_group("Kubernetes cluster")
    g.add_argument("--context", help="kubeconfig context")
    g.add_argument("--kubeconfig", help="kubeconfig file (default: KUBECONFIG, ~/.kube/config, in-cluster)")
    g.add_argument("--request-timeout", type=float, default=10.0, metavar="S", help="API timeout (default 10)")


def _pods(p: Parser) -> None:
    g = p.add_argument_group("Kubernetes targets (kubectl's meaning)")
    g.add_argument("-n", "--namespace", help="namespace (default: the current context's)")
    g.add_argument("-A", "--all-namespaces", action="store_true", help="with -l: pods of every namespace")
    g.add_argument("-l", "--selector", help="pods matching this label selector")
    g.add_argument("-c", "--container", help="container of the pod (default: kubectl's default container)")


def _target(p: Parser) -> None:
    p.add_argument(
        "target",
        nargs="?",
        default="",
        help="process name, pid:N, N, container name/ID/prefix, pod/NAME, deploy/NAME, ds/NAME",
    )
    p.add_argument(
        "--func", action="append", required=True, metavar="PATTERN", help="name, last component, glob or substring"
    )
    p.add_argument("--runtime", help="resolver to use (host, docker, k8s)")
    p.add_argument("--lib", metavar="NAME", help="probe the mapped library whose file name starts with NAME")
    p.add_argument(
        "--max-funcs", type=int, default=100, metavar="N", help="refuse patterns matching more (default 100)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the recommended command lines")
    p.add_argument("--run", action="store_true", help="run the bpftrace command (Ctrl-C stops it, exit 130)")
    p.add_argument("--duration", type=float, metavar="S", help="with --run: stop after S seconds")
    p.add_argument(
        "--all",
        action="store_true",
        help="take every container a prefix matches; with --run, probe every target in one bpftrace program",
    )
    p.add_argument(
        "--tool", choices=("bpftrace", "perf"), default="bpftrace", help="also print the perf probe/record path"
    )
    from ctrace.actions import ACTIONS, PROBES

    p.add_argument(
        "--action",
        choices=tuple(ACTIONS),
        default="stack",
        help="; ".join(f"{a.name}: {a.help}" for a in ACTIONS.values()),
    )
    p.add_argument(
        "--probe",
        choices=PROBES,
        default="uprobe",
        help="entry (default), uretprobe (not for Go), or return: a uprobe on each RET instruction",
    )
    p.add_argument(
        "--bpftrace",
        metavar="PATH",
        help="the bpftrace that will run the programs (default: bpftrace from PATH); its version decides their form",
    )


def _symbols(p: Parser) -> None:
    p.add_argument("what", metavar="PATH|TARGET")
    p.add_argument("--func", action="append", metavar="PATTERN", help="only functions matching")
    p.add_argument("--runtime", help="resolver to use (host, docker, k8s)")


def _ns(p: Parser) -> None:
    p.add_argument("pid", metavar="PID")


def _ps(p: Parser) -> None:
    p.add_argument("name", nargs="?", help="only processes of this name")
    p.add_argument("--container", metavar="NAME", help="a docker container's processes, with in-container PIDs")


def _completion(p: Parser) -> None:
    p.add_argument("shell", choices=("bash", "zsh"))


def _complete(p: Parser) -> None:
    p.add_argument("kind", choices=("targets", "funcs"))
    p.add_argument("target", nargs="?", default="")


Add = Callable[[Parser], None]
COMMANDS: tuple[tuple[str, str | None, tuple[Add, ...], Add], ...] = (
    ("target", "bpftrace commands for functions of a running target", (_output, _cluster, _pods), _target),
    ("symbols", "traceable functions of a binary or a target", (_output, _cluster, _pods), _symbols),
    ("ns", "PID chain and namespaces of a process", (_output, _cluster), _ns),
    ("ps", "processes with their binary, container, pod and PID chain", (_output, _cluster), _ps),
    ("completion", "print a shell completion script (source <(ctrace completion bash))", (), _completion),
    ("__complete", None, (), _complete),  # what the completion scripts call
)


def run() -> NoReturn:
    """The console scripts' entry: main(), then the process ends without the interpreter's
    teardown, which frees every object a listing made one by one (libLLVM: ~6 ms of a
    ~130 ms run) for memory the kernel takes back at once. Output is flushed first;
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
    all (~30 ms of a cold dockerd listing); it is switched back on for in-process callers."""
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
        args = parse(prog, args_list)
        args.under_kubectl = prog.startswith("kubectl ")
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


def parse(prog: str, argv: list[str]) -> argparse.Namespace:
    try:
        return build_parser(prog, argv).parse_args(argv)
    except UsageError:
        return build_parser(prog).parse_args(argv)  # raises again, naming every command


def _report(prog: str, message: str, hint: str) -> None:
    sys.stderr.write(f"{prog}: error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
