"""Completion as a user meets it: a real bash and zsh in tmux, and kubectl's plugin completion.

The candidates come from the live machine: a docker container started here, processes
started here, their functions. Each shell test types into a real interactive shell and
reads the screen, so what is checked is what a person would see after pressing Tab.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests import terminal
from tests.conftest import Built, Processes, ctrace, need

if TYPE_CHECKING:
    from tests.cluster import Cluster


def candidates(*words: str, prog: str = "ctrace") -> tuple[list[str], str]:
    res = ctrace("__complete", "--", *words)
    assert res.code == 0 and res.err == "", res
    *found, directive = res.out.splitlines()
    return found, directive


def test_commands_never_offer_the_hidden_one() -> None:
    found, directive = candidates("")
    assert found == ["target", "symbols", "ns", "ps", "completion", "version"] and directive == ":4"
    assert candidates("__")[0] == []


@pytest.mark.parametrize(
    ("words", "want"),
    [
        (["target", "x", "-o", ""], ["text", "wide", "json", "yaml"]),
        (["ps", "--output", "w"], ["wide"]),
        (["target", "x", "--probe", "u"], ["uprobe", "uretprobe"]),
        (["target", "x", "--tool", ""], ["bpftrace", "perf"]),
        (["target", "x", "--output=j"], ["--output=json"]),
        (["completion", ""], ["bash", "zsh"]),
        (["-o", "json", "ta"], ["target"]),  # global flags before the command
    ],
)
def test_choices_complete(words: list[str], want: list[str]) -> None:
    assert candidates(*words)[0] == want


def test_action_choices_are_the_parsers() -> None:
    from ctrace.cli.parser import build_parser

    parser = build_parser("ctrace", ["target"])
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    (action,) = [a for a in sub.choices["target"]._actions if a.dest == "action"]  # type: ignore[attr-defined]
    found = candidates("target", "x", "--action", "")[0]
    assert found == list(action.choices) and {"stack", "count", "args", "latency"} <= set(found)


@pytest.mark.parametrize("command", ["target", "symbols"])
def test_runtime_offers_only_what_the_parser_accepts(command: str) -> None:
    """--runtime completes to the registry's names (resolvers.RUNTIMES and the resolvers a
    target may name): each one offered parses, and a value the parser refuses is never offered
    (completion once offered 'container', which --runtime refuses)."""
    from ctrace.cli.parser import parse
    from ctrace.errors import UsageError

    found, directive = candidates(command, "x", "--runtime", "")
    assert directive == ":4"
    assert {"docker", "containerd", "podman", "cri-o", "host", "k8s"} <= set(found)
    for value in found:
        args = parse("ctrace", [command, "x", "--func", "f", "--runtime", value])
        assert args.runtime == value
    for refused in ("container", "lxc", "rkt"):
        assert refused not in found
        with pytest.raises(UsageError, match="unknown runtime"):
            parse("ctrace", [command, "x", "--func", "f", "--runtime", refused])
    assert candidates(command, "x", "--runtime", "c")[0] == [v for v in found if v.startswith("c")]


def test_flags_complete_from_the_parser() -> None:
    found = candidates("target", "x", "-")[0]
    assert {"-q", "--quiet", "--func", "--lib", "--action", "--probe", "--tool", "-o", "--debug"} <= set(found)
    assert candidates("target", "x", "--fu")[0] == ["--func"]


def test_ns_completes_pids_and_ps_names(built: Built, processes: Processes) -> None:
    proc = processes.start(built["stack-unwind"])
    pids = candidates("ns", str(proc.pid)[:-1])[0]
    assert str(proc.pid) in pids and all(p.isdigit() for p in pids)
    assert "stack-unwind" in candidates("ps", "stack-unw")[0]


def test_funcs_and_libs_of_the_target(built: Built, processes: Processes) -> None:
    proc = processes.start(built["stack-unwind"])
    assert candidates("target", f"pid:{proc.pid}", "--func", "func_")[0] == ["func_a", "func_b", "func_c"]
    dyn = processes.start(built["hello-dyn"])
    assert "libc.so.6" in candidates("target", f"pid:{dyn.pid}", "--lib", "libc")[0]
    assert "malloc" in candidates("target", f"pid:{dyn.pid}", "--lib", "libc", "--func", "mallo")[0]


@pytest.fixture(params=["bash", "zsh"])
def shell(request: pytest.FixtureRequest) -> Iterator[terminal.Terminal]:
    need(shutil.which("tmux") is not None, "tmux is not installed (make test installs it)")
    need(shutil.which(request.param) is not None, f"{request.param} is not installed (make test installs it)")
    need((terminal.BINDIR / "ctrace").exists(), "the ctrace console script is not installed (pip install -e .)")
    if request.param == "bash":
        need(os.path.exists(terminal.BASH_COMPLETION), "bash-completion is not installed (make test installs it)")
    term = terminal.bash() if request.param == "bash" else terminal.zsh()
    yield term
    term.close()


def typed(term: terminal.Terminal, text: str) -> str:
    """The prompt line after typing ``text`` and pressing Tab; the line is cleared afterwards."""
    term.complete(text)
    line = term.line().rstrip()
    term.keys("C-u")
    return line


def test_completion_in_a_real_shell(
    shell: terminal.Terminal, ux_container: str, built: Built, processes: Processes
) -> None:
    # "ux-st" is where the container's name and no process's name begin.
    assert typed(shell, f"ctrace target {ux_container[:-3]}") == f"$ ctrace target {ux_container}"
    proc = processes.start(built["stack-unwind"])
    # bash splits words at ':'; the completion must not double the "pid:" part.
    assert typed(shell, f"ctrace target pid:{proc.pid}") == f"$ ctrace target pid:{proc.pid}"
    assert (
        typed(shell, f"ctrace target pid:{proc.pid} --func func_c") == f"$ ctrace target pid:{proc.pid} --func func_c"
    )
    assert typed(shell, f"ctrace ns {proc.pid}") == f"$ ctrace ns {proc.pid}"
    assert typed(shell, "ctrace target x -o wi") == "$ ctrace target x -o wide"
    assert typed(shell, "ctrace target x --prob") == "$ ctrace target x --probe"
    # kubectl's plugin completion (kubectl's own completion script, then kubectl_complete-ctrace)
    if shutil.which("kubectl"):
        assert typed(shell, "kubectl ctrace target --probe uret") == "$ kubectl ctrace target --probe uretprobe"
    listed = shell.complete("ctrace target x --action ", tabs=2)
    shell.clear_line()
    assert all(word in listed for word in ("stack", "count", "args", "latency"))


def test_kubectl_runs_the_completion_executable() -> None:
    """kubectl's own protocol (kubectl __complete): candidates, then a :4 directive (no file names)."""
    need(shutil.which("kubectl") is not None, "kubectl is not installed (make test installs it)")
    need((terminal.BINDIR / "kubectl_complete-ctrace").exists(), "kubectl_complete-ctrace is not installed")
    env = {**os.environ, "PATH": f"{terminal.BINDIR}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["kubectl", "__complete", "ctrace", "target", "x", "-o", ""], capture_output=True, text=True, env=env
    )
    assert out.stdout.splitlines() == ["text", "wide", "json", "yaml", ":4"], out


def test_scripts_parse() -> None:
    assert subprocess.run(["bash", "-n", "-c", ctrace("completion", "bash").out]).returncode == 0
    need(shutil.which("zsh") is not None, "zsh is not installed (make test installs it)")
    assert subprocess.run(["zsh", "-n", "-c", ctrace("completion", "zsh").out]).returncode == 0


def test_a_broken_line_completes_to_nothing_quietly() -> None:
    for line in ("ctrace target 'unclosed", 'ctrace target "x --func ', "ctrace --proc-root"):
        res = ctrace("__complete", "--bash", line)
        assert res.code == 0 and res.err == "" and res.out.endswith((":4\n", ":0\n")), res


def test_zsh_and_bash_agree_with_the_candidates(tmp_path: Path) -> None:
    """The bash entry point reads the line itself: the same words give the same candidates."""
    found, _ = candidates("target", "x", "--action", "")
    res = ctrace("__complete", "--bash", "ctrace target x --action ")
    assert res.out.splitlines()[:-1] == found


@pytest.mark.cluster
def test_pods_complete_under_kubectl(cluster: Cluster, k8s_namespace: str, tmp_path: Path) -> None:
    """Under kubectl a bare NAME is a pod: kubectl ctrace target <TAB> offers the namespace's pods,
    as the local cluster's real API server lists them."""
    import yaml

    need(shutil.which("kubectl") is not None, "kubectl is not installed (make test installs it)")
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["contexts"][0]["context"]["namespace"] = k8s_namespace
    cfg = tmp_path / "config"
    cfg.write_text(yaml.safe_dump(config))
    names = sorted(p["metadata"]["name"] for p in cluster.json("get", "pods", "-n", k8s_namespace)["items"])
    ops = [n for n in names if n.startswith("cilium-operator-")]
    assert len(ops) == 2
    env = {**os.environ, "PATH": f"{terminal.BINDIR}:{os.environ['PATH']}", "KUBECONFIG": str(cfg)}
    out = subprocess.run(
        ["kubectl", "__complete", "ctrace", "target", "cilium-operator-"], capture_output=True, text=True, env=env
    )
    assert out.stdout.splitlines() == [*ops, ":4"], out
    plain = ctrace("__complete", "--", "target", "pod/cilium-operator", env=env)
    assert plain.out.splitlines() == [*(f"pod/{n}" for n in ops), ":4"]
    # no pods offered to the ctrace CLI for a bare word: there a bare word is a process or container
    assert not [c for c in ctrace("__complete", "--", "target", "two-", env=env).out.splitlines() if "two" in c]
