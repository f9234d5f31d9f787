"""The command line: every subcommand and flag (COMMANDS), read by argparse and by completion."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from ctrace.errors import UsageError
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors go through the same one-line handler as the rest."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see '{self.prog} --help'")


class VersionAction(argparse.Action):
    """``--version``: the same lines as ``ctrace version``."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> NoReturn:
        from ctrace.cli import version

        version.version_text(sys.stdout)
        parser.exit()


class Formatter(argparse.RawDescriptionHelpFormatter):
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
    (a run pays for one argparse parser, not six), or all of them when it names none.
    A command line that fails to parse is parsed again with all of them (parse), so its
    error lists every command.

    The global flags (``-o``, ``--debug``, ``--no-cache``, ``--proc-root``) are accepted
    before and after the subcommand, as kubectl accepts its flags anywhere: each subcommand
    declares them again with SUPPRESS defaults, so a flag it was not given does not undo
    one given before it."""
    parser = Parser(
        prog=prog,
        description="Find the file, PID and symbol to probe, and print the bpftrace command.",
        epilog=EXAMPLES.replace("ctrace ", f"{prog} "),
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action=VersionAction, nargs=0, help="show ctrace, bpftrace and kernel versions")
    _globals(parser, outer=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    named = {name for name, *_ in COMMANDS} & set(argv or ())
    for name, help_text, groups, add in COMMANDS:
        extra = {"help": help_text} if help_text else {}  # no help: not listed in --help
        if named and name not in named:
            continue
        p = sub.add_parser(name, formatter_class=Formatter, **extra)  # type: ignore[arg-type]
        for group in groups:
            group(p)
        add(p)
        _globals(p, outer=False, output=_output in groups)
    return parser


def _globals(p: Parser, outer: bool, output: bool = True) -> None:
    g = p.add_argument_group("global flags") if not outer else p

    def default(value: object) -> object:
        return value if outer else argparse.SUPPRESS

    if output:
        g.add_argument(
            "-o",
            "--output",
            choices=OUTPUTS,
            metavar="FORMAT",
            default=default("text"),
            help="output format: text, wide (more columns), json or yaml (as kubectl)",
        )
    g.add_argument("--debug", action="store_true", default=default(False), help="show tracebacks")
    g.add_argument(
        "--no-cache",
        action="store_true",
        default=default(False),
        help="do not read or write the symbol cache (also CTRACE_NO_CACHE=1)",
    )
    g.add_argument("--proc-root", default=default("/proc"), metavar="DIR", help="where the host's /proc is mounted")


OUTPUTS = ("text", "wide", "json", "yaml")


EXAMPLES = """examples:
  ctrace ps                                  processes with their containers and pods
  ctrace target nginx --func ngx_http_process_request
  ctrace target pid:1234 --lib libc --func malloc -q
  ctrace symbols /usr/bin/dockerd --func 'http*'
  source <(ctrace completion bash)           complete commands, targets and functions"""


def _output(p: Parser) -> None:
    """Marks a command that takes ``-o`` (declared with the global flags)."""


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
    g.add_argument("--agent-namespace", metavar="NS", help="with --run: where the ctrace agents run (ctrace-system)")


def _target(p: Parser) -> None:
    p.add_argument(
        "target",
        nargs="?",
        default="",
        help="process name, pid:N, N, container name/ID/prefix, pod/NAME, deploy/NAME, ds/NAME",
    )
    p.add_argument(
        "--func", action="append", metavar="PATTERN", help="(required) name, last component, glob or substring"
    )
    _runtime(p)
    p.add_argument("--lib", metavar="NAME", help="probe the mapped library whose file name starts with NAME")
    p.add_argument(
        "--max-funcs", type=int, default=100, metavar="N", help="refuse patterns matching more (default 100)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print only the recommended command lines")
    p.add_argument("--run", action="store_true", help="run the bpftrace command (Ctrl-C stops it, exit 130)")
    p.add_argument(
        "-e",
        "--program",
        metavar="PROGRAM",
        help="your own bpftrace program instead of --func: $path, $pid, $container_pid name the target; "
        "each probe is bound to it",
    )
    p.add_argument("--duration", type=float, metavar="S", help="with --run: stop after S seconds")
    p.add_argument(
        "--all",
        action="store_true",
        help="take every container a prefix matches; with --run, probe every target in one bpftrace program",
    )
    p.add_argument(
        "--tool", choices=("bpftrace", "perf"), default="bpftrace", help="also print the perf probe/record path"
    )
    from ctrace.bpftrace.actions import ACTIONS, PROBES

    p.add_argument(
        "--action",
        choices=tuple(ACTIONS),
        help="; ".join(f"{a.name}: {a.help}" for a in ACTIONS.values()),
    )
    p.add_argument("--folded", metavar="FILE", help="with --run: write the stacks folded, for flamegraph.pl")
    p.add_argument("--flamegraph", metavar="FILE", help="with --run: write an SVG flame graph of the stacks")
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


def _runtime(p: Parser) -> None:
    """``--runtime``: its names and its check are the registry's (resolvers.names), as completion's."""
    from ctrace.resolvers.registry import check_runtime, names

    p.add_argument("--runtime", type=check_runtime, help=f"where to look: {', '.join(names())}")


def _symbols(p: Parser) -> None:
    p.add_argument("what", metavar="PATH|TARGET")
    p.add_argument("--func", action="append", metavar="PATTERN", help="only functions matching")
    _runtime(p)


def _ns(p: Parser) -> None:
    p.add_argument("pid", metavar="PID")


def _ps(p: Parser) -> None:
    p.add_argument("name", nargs="?", help="only processes of this name")
    p.add_argument("--container", metavar="NAME", help="a container's processes (any runtime), with in-container PIDs")


def _completion(p: Parser) -> None:
    p.add_argument("shell", choices=("bash", "zsh"))


def _version(p: Parser) -> None:
    """No arguments: ``ctrace version [-o json|yaml]``."""


def _agent(p: Parser) -> None:
    from ctrace.agent.protocol import PORT

    p.add_argument("--listen", default=f"127.0.0.1:{PORT}", metavar="HOST:PORT", help=f"default 127.0.0.1:{PORT}")
    p.add_argument("--bpftrace", metavar="PATH", help="the bpftrace the traces run (default: bpftrace from PATH)")
    p.add_argument("--max-duration", type=float, default=3600.0, metavar="S", help="longest run (default 3600)")
    p.add_argument("--max-runs", type=int, default=8, metavar="N", help="traces at once (default 8)")
    p.add_argument("--check", action="store_true", help="only ask the agent on --listen for its hello (readiness)")


Add = Callable[[Parser], None]


COMMANDS: tuple[tuple[str, str | None, tuple[Add, ...], Add], ...] = (
    ("target", "bpftrace commands for functions of a running target", (_output, _cluster, _pods), _target),
    ("symbols", "traceable functions of a binary or a target", (_output, _cluster, _pods), _symbols),
    ("ns", "PID chain and namespaces of a process", (_output, _cluster), _ns),
    ("ps", "processes with their binary, container, pod and PID chain", (_output, _cluster), _ps),
    ("completion", "print a shell completion script (source <(ctrace completion bash))", (), _completion),
    ("version", "show ctrace, bpftrace and kernel versions", (_output,), _version),
    ("agent", "serve ctrace requests on this node (the node agent's command; PROTOCOL.md)", (), _agent),
)


def parse(prog: str, argv: list[str]) -> argparse.Namespace:
    """The parsed command line; a misspelt command or flag is named with what was probably meant."""
    _check_command(prog, argv)
    try:
        args, extra = build_parser(prog, argv).parse_known_args(argv)
    except UsageError:
        args, extra = build_parser(prog).parse_known_args(argv)  # raises again, naming every command
    if extra:
        raise _unknown(prog, args.command, extra[0])
    return args


def _check_command(prog: str, argv: list[str]) -> None:
    """The first word that is not a flag must be a command; argparse would list the hidden one too."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in ("-o", "--output", "--proc-root"):
            skip = True  # the flag's value
        elif word == "--" or not word.startswith("-"):
            names = [name for name, *_ in COMMANDS]
            if word not in names:
                near = _near(word, names)
                guess = f"did you mean '{near}'? " if near else ""
                raise UsageError(f"unknown command {word!r}", f"{guess}see '{prog} --help'")
            return


def _unknown(prog: str, command: str | None, word: str) -> UsageError:
    where = f"{prog} {command}" if command else prog
    if not word.startswith("-") or word == "-":
        return UsageError(f"unexpected argument {word!r}", f"see '{where} --help'")
    flag = word.split("=", 1)[0]
    parser = build_parser(prog, [command] if command else None)
    flags = [s for a in parser._actions for s in a.option_strings]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            flags = [s for a in action.choices[command]._actions for s in a.option_strings]
    near = _near(flag, [f for f in flags if f.startswith("--")] if flag.startswith("--") else flags)
    guess = f"did you mean {near}? " if near else ""
    return UsageError(f"unknown flag {flag!r}", f"{guess}see '{where} --help'")


def _near(word: str, choices: Sequence[str]) -> str | None:
    import difflib  # only for a mistake

    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return found[0] if found else None
