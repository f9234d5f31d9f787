"""Shell completion: one function (``candidates``) behind bash, zsh and kubectl.

The shell scripts and kubectl's plugin completion (``kubectl_complete-ctrace``) all
hand ctrace the words typed so far, the last one being completed, and ctrace
answers from the machine as it is: processes, containers, PIDs, a target's
functions and mapped libraries, and every flag and choice read from the argparse
parser itself, so a new flag completes without an edit here. The answer is one
candidate a line and then, as cobra's protocol (which kubectl speaks) has it, a
``:N`` directive line: 4 means "no file names", 0 "file names are fine too".
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Iterator, Sequence

from ctrace.errors import CtraceError
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers.base import Context

if TYPE_CHECKING:
    from typing import TextIO

    from ctrace.elf import ElfInfo

NO_FILES = 4  # cobra.ShellCompDirectiveNoFileComp
FILES = 0  # cobra.ShellCompDirectiveDefault: the shell may offer file names

BASH = r"""# bash completion for ctrace: source <(ctrace completion bash)
_ctrace() {
    local IFS=$'\n' reply directive
    # The line up to the cursor, split by ctrace itself: bash's COMP_WORDS would cut pid:1 at the colon.
    reply=($(COMP_WORDBREAKS="$COMP_WORDBREAKS" \
        "${COMP_WORDS[0]}" __complete --bash "${COMP_LINE:0:$COMP_POINT}" 2>/dev/null))
    directive=${reply[${#reply[@]}-1]}
    unset 'reply[${#reply[@]}-1]'
    COMPREPLY=("${reply[@]}")
    if [[ ${#COMPREPLY[@]} -eq 0 && $directive == :0 ]]; then
        COMPREPLY=($(compgen -f -- "${COMP_WORDS[COMP_CWORD]}"))
    fi
}
complete -F _ctrace ctrace kubectl-ctrace
"""

ZSH = r"""#compdef ctrace kubectl-ctrace
# zsh completion for ctrace: source <(ctrace completion zsh)
_ctrace() {
    local -a reply
    reply=(${(f)"$(${words[1]} __complete -- "${(@Q)words[2,CURRENT]}" 2>/dev/null)"})
    local directive=${reply[-1]}
    reply[-1]=()
    if (( ${#reply} )); then
        compadd -a reply
    elif [[ $directive == :0 ]]; then
        _files
    fi
}
if (( $+functions[compdef] )); then
    compdef _ctrace ctrace kubectl-ctrace
fi
"""


def script(shell: str) -> str:
    return BASH if shell == "bash" else ZSH


def serve(argv: Sequence[str], prog: str, out: TextIO) -> int:
    """``ctrace __complete -- WORD...`` (zsh) or ``__complete --bash LINE`` (bash)."""
    bash = bool(argv) and argv[0] == "--bash"
    if bash:
        words = split_line(argv[1] if len(argv) > 1 else "")[1:]
    else:
        words = list(argv[1:] if argv and argv[0] == "--" else argv)
    found, directive = candidates(words or [""], prog)
    if bash:
        found = [_for_bash(c, words[-1] if words else "") for c in found]
    out.write("".join(c + "\n" for c in found) + f":{directive}\n")
    return 0


def kubectl_main() -> int:
    """``kubectl_complete-ctrace WORD...``: kubectl runs it for ``kubectl ctrace <TAB>``."""
    import sys

    try:
        return serve(sys.argv[1:], "kubectl ctrace", sys.stdout)
    except Exception:  # noqa: BLE001 - a completion must never print a traceback into the prompt
        sys.stdout.write(f":{NO_FILES}\n")
        return 0


def split_line(line: str) -> list[str]:
    """The words of a command line up to the cursor; the last is "" after a space."""
    for closing in ("", "'", '"'):
        try:
            words = shlex.split(line + closing)
            break
        except ValueError:
            continue
    else:
        words = line.split()
    if not line or line[-1].isspace():
        words.append("")
    return words


def _for_bash(candidate: str, word: str) -> str:
    """What bash puts in place of the word it is completing.

    Readline's word starts after the last COMP_WORDBREAKS character (':' and '=' among
    them), so ``pid:12`` is completed as ``12``; and a name with characters the shell
    reads (``pkg.(*T).m``) must be quoted unless the user opened a quote already."""
    breaks = os.environ.get("COMP_WORDBREAKS", " \t\n\"'><=;|&(:")
    if not word.startswith(("'", '"')) and candidate != shlex.quote(candidate):
        return shlex.quote(candidate)
    cut = max((word.rfind(c) for c in breaks if c not in " \t\n\"'"), default=-1)
    return candidate[cut + 1 :]


def candidates(words: Sequence[str], prog: str = "ctrace") -> tuple[list[str], int]:
    """What may come at the last of ``words`` (the words after the program), and a directive."""
    from ctrace.cli import parser as cli

    *before, current = words
    parser = cli.build_parser(prog)
    sub = _subparsers(parser)
    command, taken = _command(before, parser, sub)
    if command is None:
        if current.startswith("-"):
            return _starting(current, _flags(parser)), NO_FILES
        return _starting(current, [name for name, *_ in cli.COMMANDS]), NO_FILES
    here = sub[command]
    if current.startswith("--") and "=" in current:  # --output=js
        flag, _, value = current.partition("=")
        found, directive = _value(here, flag, value, command, taken)
        return [f"{flag}={v}" for v in found], directive
    if before and _takes_value(here, before[-1]):
        return _value(here, before[-1], current, command, taken)
    if current.startswith("-"):
        return _starting(current, _flags(here)), NO_FILES
    if taken.positionals:
        return [], NO_FILES  # every command takes one positional at most
    return _positional(command, current, taken, prog)


class Taken:
    """What the words before the current one already say: positionals and flag values."""

    def __init__(self) -> None:
        self.positionals: list[str] = []
        self.values: dict[str, str] = {}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command(
    before: Sequence[str], parser: argparse.ArgumentParser, sub: dict[str, argparse.ArgumentParser]
) -> tuple[str | None, Taken]:
    taken = Taken()
    command: str | None = None
    words = iter(before)
    for word in words:
        here = sub[command] if command else parser
        if word.startswith("-"):
            if "=" not in word and _takes_value(here, word):
                taken.values[_dest(here, word)] = next(words, "")
        elif command is None:
            if word not in sub:
                return None, taken
            command = word
        else:
            taken.positionals.append(word)
    return command, taken


def _action(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def _takes_value(parser: argparse.ArgumentParser, flag: str) -> bool:
    action = _action(parser, flag)
    return action is not None and action.nargs != 0


def _dest(parser: argparse.ArgumentParser, flag: str) -> str:
    action = _action(parser, flag)
    return action.dest if action else flag


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return sorted({s for a in parser._actions for s in a.option_strings if a.help != argparse.SUPPRESS})


def _starting(prefix: str, options: Sequence[str]) -> list[str]:
    return [o for o in options if o.startswith(prefix)]


def _value(
    parser: argparse.ArgumentParser, flag: str, current: str, command: str, taken: Taken
) -> tuple[list[str], int]:
    """A flag's value: its choices, or what the machine offers for it."""
    action = _action(parser, flag)
    if action is not None and action.choices:
        return _starting(current, [str(c) for c in action.choices]), NO_FILES
    dest = action.dest if action else ""
    target = taken.positionals[0] if taken.positionals else ""
    ctx = _context(taken)
    if dest == "func" and target:
        return _starting(current, list(functions(target, ctx, taken.values.get("lib")))), NO_FILES
    if dest == "lib" and target:
        return _starting(current, list(libraries(target, ctx))), NO_FILES
    if dest == "runtime":
        from ctrace.resolvers.registry import names

        return _starting(current, list(names())), NO_FILES
    if dest == "container" and command == "ps":
        return _starting(current, containers(ctx, current)), NO_FILES
    if dest in ("proc_root", "kubeconfig"):
        return [], FILES
    return [], NO_FILES


def _context(taken: Taken) -> Context:
    from ctrace.elf import cache

    root = taken.values.get("proc_root", "/proc")
    return Context(proc_root=root, self_pid=os.getpid(), cache_dir=cache.default_dir())


def _positional(command: str, current: str, taken: Taken, prog: str) -> tuple[list[str], int]:
    ctx = _context(taken)
    if command in ("target", "symbols"):
        found = _starting(current, [*pods(current, prog, taken), *targets(ctx, current)])
        # symbols also takes a file: let the shell offer paths for what looks like one
        return found, FILES if command == "symbols" and (not found or current.startswith((".", "/", "~"))) else NO_FILES
    if command == "ns":
        return _starting(current, [str(pid) for pid, _ in _processes(ctx)]), NO_FILES
    if command == "ps":
        return _starting(current, sorted({name for _, name in _processes(ctx)})), NO_FILES
    if command == "completion":
        return _starting(current, ["bash", "zsh"]), NO_FILES
    return [], NO_FILES


def _processes(ctx: Context) -> Iterator[tuple[int, str]]:
    """(PID, name) of every user-space process."""
    from ctrace.proc import procfs

    for pid in procfs.pids(ctx.proc_root):
        try:
            status = procfs.read_status(pid, ctx.proc_root)
        except CtraceError:
            continue
        if not status.kthread and status.state != "Z" and pid != ctx.self_pid:
            yield pid, status.name


def targets(ctx: Context, current: str = "") -> list[str]:
    """Container names, process names (each once), then pid:N: what ``target`` takes."""
    procs = list(_processes(ctx))
    names = sorted({name for _, name in procs} | set(containers(ctx, current)))
    return [*names, *(f"pid:{pid}" for pid, _ in procs)]


def pods(current: str, prog: str, taken: Taken) -> list[str]:
    """Pods of the namespace, when a cluster is configured: bare names under kubectl (where a
    bare NAME is a pod), ``pod/NAME`` once the word starts so."""
    kubectl = prog.startswith("kubectl ")
    if not kubectl and not current.startswith(("pod/", "po/")):
        return []
    from ctrace.resolvers import kubernetes
    from ctrace.resolvers.base import K8sOptions

    values = taken.values
    opts = K8sOptions(
        namespace=values.get("namespace"),
        context=values.get("context"),
        kubeconfig=values.get("kubeconfig"),
        request_timeout=3.0,
    )
    if not kubernetes.configured(opts):
        return []
    try:
        listed = kubernetes.Api(opts).select("")
    except CtraceError:
        return []
    names = [p.get("metadata", {}).get("name", "") for p in listed]
    prefix = current.partition("/")[0] + "/" if "/" in current else ""
    return [prefix + n for n in names if n]


def containers(ctx: Context, prefix: str) -> list[str]:
    """Names of the running containers of every runtime that ``prefix`` begins; none for an
    empty prefix (each runtime is asked by name), or where no runtime answers."""
    from ctrace.resolvers import runtimes

    if not prefix or prefix.startswith("pid:"):
        return []
    try:
        hits, _ = runtimes.find(prefix, ctx, runtimes.scan(None, ctx).monitors)
    except CtraceError:
        return []
    return sorted({h.container.name for h in hits if h.container.name.startswith(prefix)})


def functions(target: str, ctx: Context, lib: str | None = None) -> Iterator[str]:
    """Function names of the target's binary, or of its library ``lib`` (none when it cannot be resolved)."""
    try:
        if lib:
            info = _library_info(target, ctx, lib)
        else:
            from ctrace.plan import targets

            info = targets.symbols_of(target, ctx)[1]
    except (CtraceError, OSError):
        return
    from ctrace.elf import names

    for name in sorted(set(names.names(info.symbols))):
        if name.isprintable() and " " not in name:
            yield name


def _library_info(target: str, ctx: Context, lib: str) -> ElfInfo:
    from ctrace.plan import locate, targets

    proc = targets.processes(target, ctx)[0]
    return locate.load(proc, ctx, locate.ElfCache(ctx.cache_dir), lib).info


def libraries(target: str, ctx: Context) -> Iterator[str]:
    """Sonames the target's first process maps: what ``--lib`` takes."""
    from ctrace.plan import targets
    from ctrace.proc import mapped

    try:
        proc = targets.processes(target, ctx)[0]
        found = mapped.libraries(proc.pid, ctx.proc_root)
    except CtraceError:
        return
    yield from sorted({os.path.basename(path) for path in found})
