"""Exact argv, shell round trips and quoting: nothing a name holds escapes its literal."""

from __future__ import annotations

import shlex

import pytest

from ctrace.bpftrace import actions, emit, sites
from ctrace.model import Symbol

REGEN = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"


def name_of(name: str, others: tuple[str, ...] = ()) -> sites.Site | None:
    sym = Symbol(name, 0x401655, 37, "symtab")
    index = sites.NameIndex([sym, *(Symbol(o, 0x500000 + i, 1, "symtab") for i, o in enumerate(others))])
    return sites.name_site(sym, index)


def stack_program(path: str, where: str, pid: int) -> str:
    block = actions.Block((f"uprobe:{path}:{where}",), f"pid == {pid}", "f", "c")
    return actions.stack(block)


def test_exact_argv_for_plain_symbol() -> None:
    where = name_of("hello")
    assert where is not None
    cmd = emit.command("proc-root", 42, stack_program("/proc/42/root/usr/bin/hello", where.text, 42))
    assert cmd.argv == (
        "bpftrace",
        "-p",
        "42",
        "-e",
        'uprobe:/proc/42/root/usr/bin/hello:hello /pid == 42/ { printf("pid=%d f%s\\n", pid, ustack); }',
    )
    assert shlex.split(cmd.shell) == list(cmd.argv)


def test_command_takes_the_dialects_bpftrace_and_unsafe() -> None:
    cmd = emit.command("exe", 7, "BEGIN { exit(); }", unsafe=True, with_p=False, program="/opt/bt/bpftrace")
    assert cmd.argv == ("/opt/bt/bpftrace", "--unsafe", "-e", "BEGIN { exit(); }")


def test_go_symbol_is_quoted() -> None:
    where = name_of(REGEN)
    assert where is not None and (where.text, where.kind) == (f'"{REGEN}"', "name")


def test_star_that_would_expand_to_more_is_not_a_name() -> None:
    # bpftrace expands '*' even inside quotes: (*Endpoint) also matches (*XEndpoint).
    assert name_of(REGEN, ("github.com/cilium/cilium/pkg/endpoint.(*XEndpoint).regenerate",)) is None


def test_duplicate_name_is_not_a_name() -> None:
    assert name_of("helper.part.0", ("helper.part.0",)) is None


def test_name_offset_site() -> None:
    sym = Symbol(REGEN, 0x401655, 37, "symtab")
    where = sites.name_offset_site(sym, sites.NameIndex([sym]), 0x401655 + 43)
    assert where is not None and where.text == f'"{REGEN}"+43'
    assert where.describe() == f'"{REGEN}"+43 (vaddr 0x401680)'


def test_address_story() -> None:
    """The header shows the number in the command and, where it differs, the vaddr."""
    assert sites.offset_site(0x20DCA0, "why", 0x60DCA0).describe() == "file offset 0x20dca0 (vaddr 0x60dca0)"
    assert sites.Site("0x401655", "address", vaddr=0x401655).describe() == "vaddr 0x401655"
    rets = [sites.offset_site(0x10, "why", 0x400010), sites.offset_site(0x20, "why", 0x400020)]
    assert sites.describe(rets) == "file offsets 0x10, 0x20 (vaddrs 0x400010, 0x400020)"


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("func_c", "func_c"),
        (REGEN, "regenerate"),
        ('a"b%n\\x', "a_b_n_x"),
        ("(anonymous namespace)::work(long, long)", "work"),
        ("acme::net::Conn::handshake(int)", "handshake"),
        ("main.F[go.shape.int_0]", "F[go.shape.int_0]"),
        ("example.com/x.(*List[go.shape.string]).Push", "Push"),
        ("acme::Vec::operator[]", "operator[]"),
        ("main.(*Book).Reconcile", "Reconcile"),
    ],
)
def test_label_is_safe_in_a_string(name: str, label: str) -> None:
    assert emit.label(name) == label


HOSTILE = [
    'x"; system("touch /tmp/pwned"); "',
    "a'b",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "semi;colon",
    "br}ace{",
    "back\\slash",
    "new\nline",
    "ünïcödé",
    "co:lon",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_symbols_stay_literal(name: str) -> None:
    where = name_of(name)
    if where is None:
        return  # attached by address, which nothing can smuggle code through
    # Inside one "..." literal with no quote or backslash that could end it.
    assert where.text == f'"{name}"'
    assert '"' not in name and "\\" not in name and "\n" not in name
    cmd = emit.command("proc-root", 1, stack_program("/proc/1/root/bin/x", where.text, 1))
    assert shlex.split(cmd.shell) == list(cmd.argv)


@pytest.mark.parametrize("path", ['/tmp/a"b/x', "/tmp/new\nline/x", "/tmp/bs\\x"])
def test_unquotable_path_has_no_literal(path: str) -> None:
    assert emit.quote_path(path) is None


def test_path_with_space_is_quoted() -> None:
    assert emit.quote_path("/opt/my app/x") == '"/opt/my app/x"'


def test_name_index_glob_hits() -> None:
    syms = [Symbol(n, i + 1, 1, "symtab") for i, n in enumerate(["a(*T).m", "a(*UT).m", "a(*T).mm", "b"])]
    index = sites.NameIndex(syms)
    assert index.glob_hits("a(*T).m") == 2
    assert index.glob_hits("b") == 1
    assert not index.unique("a(*T).m")


@pytest.mark.parametrize("func", ["$(touch /tmp/x)", "`id`", "a'b", 'a"b', "x; rm -rf /", "ünï", "}{"])
def test_agent_command_round_trips(func: str) -> None:
    from ctrace.model import Pod

    pod = Pod("kube-system", "cilium-x7k2p", "uid", "cilium-agent", "node-b", "ctrace-agent-abcde")
    cmd = emit.agent_command(pod, "ctrace-agent-abcde", [func, "regenerate"], context="prod")
    assert shlex.split(cmd.shell) == list(cmd.argv)
    assert cmd.argv[cmd.argv.index("--func") + 1] == func
    assert cmd.argv[:3] == ("kubectl", "--context", "prod")
