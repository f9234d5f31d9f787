"""Shell completion: scripts for bash and zsh, and the candidates they ask ctrace for.

The scripts call ``ctrace __complete targets`` (running processes, by name and
pid:N) and ``ctrace __complete funcs TARGET`` (the target's function names), so
completion always reflects the machine as it is.
"""

from __future__ import annotations

from ctrace import plan, procfs
from ctrace.errors import CtraceError
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers import Context

if TYPE_CHECKING:
    from typing import TextIO

COMMANDS = "target symbols ns ps completion"
OPTIONS = (
    "--func --output -o --runtime --max-funcs --run --duration --all --lib --namespace -n --container -c"
    " --context --kubeconfig --selector -l --help"
)

BASH = r"""# bash completion for ctrace: source <(ctrace completion bash)
_ctrace() {
    local cur prev words cword
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    local prog="${COMP_WORDS[0]}"
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=($(compgen -W "%(commands)s" -- "$cur"))
        return
    fi
    case "$prev" in
        --func)
            local target="${COMP_WORDS[2]}"
            COMPREPLY=($(compgen -W "$("$prog" __complete funcs "$target" 2>/dev/null)" -- "$cur"))
            return;;
        -o|--output)
            COMPREPLY=($(compgen -W "text json" -- "$cur")); return;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "%(options)s" -- "$cur"))
    elif [[ $COMP_CWORD -eq 2 && "${COMP_WORDS[1]}" =~ ^(target|symbols|ns)$ ]]; then
        COMPREPLY=($(compgen -W "$("$prog" __complete targets 2>/dev/null)" -- "$cur"))
    fi
}
complete -F _ctrace ctrace kubectl-ctrace
"""

ZSH = r"""#compdef ctrace kubectl-ctrace
# zsh completion for ctrace: source <(ctrace completion zsh)
_ctrace() {
    local -a candidates
    if (( CURRENT == 2 )); then
        candidates=(%(commands)s)
    elif [[ ${words[CURRENT-1]} == --func ]]; then
        candidates=(${(f)"$(${words[1]} __complete funcs ${words[3]} 2>/dev/null)"})
    elif [[ ${words[CURRENT]} == -* ]]; then
        candidates=(%(options)s)
    elif (( CURRENT == 3 )); then
        candidates=(${(f)"$(${words[1]} __complete targets 2>/dev/null)"})
    fi
    compadd -a candidates
}
compdef _ctrace ctrace kubectl-ctrace
"""


def script(shell: str) -> str:
    template = BASH if shell == "bash" else ZSH
    return template % {"commands": COMMANDS, "options": OPTIONS}


def targets(ctx: Context, out: TextIO) -> None:
    """Process names (each once) and pid:N of user processes."""
    names: set[str] = set()
    pids = []
    for pid in procfs.pids(ctx.proc_root):
        try:
            status = procfs.read_status(pid, ctx.proc_root)
        except CtraceError:
            continue
        if not status.kthread and status.state != "Z":
            names.add(status.name)
            pids.append(pid)
    for name in sorted(names):
        out.write(name + "\n")
    for pid in pids:
        out.write(f"pid:{pid}\n")


def funcs(target: str, ctx: Context, out: TextIO) -> None:
    """Function names of the target's binary (nothing when it cannot be resolved)."""
    try:
        _, info = plan.symbols_of(target, ctx)
    except CtraceError:
        return
    for name in sorted({s.name for s in info.symbols}):
        if name.isprintable() and " " not in name:
            out.write(name + "\n")
