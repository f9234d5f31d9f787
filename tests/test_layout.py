"""The house's rooms (issue 19): imports only go down, no module imports itself back, no module grows too big.

Read from the source with ``ast``: every ``import`` of a ctrace module, at the top or inside a
function (a lazy import still ties two modules), but not those under ``if TYPE_CHECKING:``,
which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ctrace"

GROUND = "ground"  # errors, record, model, progress: every room may use them
# Each room and the rooms it may import from: cli -> fanout -> agent -> run -> plan -> bpftrace -> elf,
# plan -> resolvers -> proc. agent (issue 21): the node agent and --run -o json, on run's pieces;
# fanout (issue 21): --run on every pod through the agents, speaking agent's protocol.
BELOW: dict[str, set[str]] = {
    "cli": {"fanout", "agent", "run", "plan", "bpftrace", "resolvers", "elf", "proc"},
    "fanout": {"agent", "run", "plan", "bpftrace", "resolvers", "elf", "proc"},
    "agent": {"run", "plan", "bpftrace", "resolvers", "elf", "proc"},
    "run": {"plan", "bpftrace", "resolvers", "elf", "proc"},
    "plan": {"bpftrace", "resolvers", "elf", "proc"},
    "bpftrace": {"elf", "proc"},
    "resolvers": {"proc"},
    "elf": set(),
    "proc": set(),
    GROUND: set(),
}
# Run the command line: the modules above cli (the agent's child is the CLI in a process group of its own).
ENTRY = {"ctrace.__main__", "ctrace._agent_child"}
MAX_LINES, MAX_COMMANDS = 400, 250


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in BELOW) else GROUND


def _runtime_nodes(tree: ast.Module) -> list[ast.stmt]:
    """Every statement but the bodies of ``if TYPE_CHECKING:``."""
    out: list[ast.stmt] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.stmt):
            out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def imports(module: str) -> set[str]:
    """The ctrace modules ``module`` imports at run time."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: imports(m) for m in MODULES}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of more than one module that reach each other (each module's reach, compared)."""
    reach = {m: _reach(graph, m) for m in graph}
    groups = {tuple(sorted(m2 for m2 in reach[m] if m in reach[m2])) for m in graph if m in reach[m]}
    return sorted(list(g) for g in groups if len(g) > 1)


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    return seen


def upward(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        if module in ENTRY:
            continue
        here = room(module)
        for target in sorted(targets):
            there = room(target)
            if there not in (here, GROUND) and there not in BELOW[here]:
                out.append(f"{module} ({here}) imports {target} ({there})")
    return out


def test_the_graph_is_read() -> None:
    """The checker sees what it must: a known downward import, a lazy one, and none under TYPE_CHECKING."""
    assert "ctrace.cli.parser" in GRAPH["ctrace.cli.main"]
    assert "ctrace.run.watch" in GRAPH["ctrace.cli.commands"]  # lazy, inside target()
    assert "ctrace.plan.request" not in GRAPH["ctrace.run.stacks"]  # TYPE_CHECKING only
    assert room("ctrace.errors") == GROUND and room("ctrace.plan") == "plan" and room("ctrace.elf.cache") == "elf"


def test_no_import_circles() -> None:
    assert circles(GRAPH) == []


def test_imports_only_go_down() -> None:
    assert upward(GRAPH) == []


def test_a_circle_and_an_upward_import_are_caught() -> None:
    """The checks can fail: a plan module importing cli, and two modules importing each other."""
    graph = {m: set(t) for m, t in GRAPH.items()}
    graph["ctrace.plan.request"].update({"ctrace.plan.targets", "ctrace.cli.render"})
    assert any({"ctrace.plan.request", "ctrace.plan.targets"} <= set(group) for group in circles(graph))
    assert upward(graph) == ["ctrace.plan.request (plan) imports ctrace.cli.render (cli)"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_too_big(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    limit = MAX_COMMANDS if module == "ctrace.cli.commands" else MAX_LINES
    assert lines <= limit, f"{module}: {lines} lines (at most {limit})"


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"))
def test_each_room_names_its_public_face(package: str) -> None:
    """Each subpackage's __init__ has a docstring and an ``__all__`` whose names exist."""
    import importlib

    mod = importlib.import_module(package)
    assert mod.__doc__ and mod.__doc__.strip(), package
    assert hasattr(mod, "__all__"), package
    for name in mod.__all__:
        assert hasattr(mod, name) or (MODULES[package].parent / f"{name}.py").exists(), f"{package}: {name}"


def test_each_runtime_of_the_registry_is_a_runtime() -> None:
    """registry.RUNTIMES is the one list: each module it names has what base.Runtime asks, under its own name."""
    from ctrace.resolvers.registry import RUNTIMES
    from ctrace.resolvers.runtimes import runtimes

    found = runtimes()
    assert list(found) == list(RUNTIMES)
    for name, module in found.items():
        assert module.NAME == name
        assert isinstance(module.LIST, str) and callable(module.find) and callable(module.describe)
