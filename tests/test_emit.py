"""Exact argv, shell round trips and quoting: nothing a name holds escapes its literal."""

from __future__ import annotations

import shlex

import pytest

from ctrace import emit
from ctrace.model import Symbol

REGEN = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"


def site_for(name: str, others: tuple[str, ...] = (), stripped: bool = False, offset: int | None = None) -> emit.Site:
    sym = Symbol(name, 0x401655, 37, "symtab")
    index = emit.NameIndex([sym, *(Symbol(o, 0x500000 + i, 1, "symtab") for i, o in enumerate(others))])
    where = emit.site(sym, index, offset, stripped)
    assert where is not None
    return where


def test_exact_argv_for_plain_symbol() -> None:
    cmd = emit.command("proc-root", 42, "/proc/42/root/usr/bin/hello", site_for("hello"))
    assert cmd is not None
    assert cmd.argv == (
        "bpftrace",
        "-p",
        "42",
        "-e",
        'uprobe:/proc/42/root/usr/bin/hello:hello { printf("%s\\n", ustack); }',
    )
    assert shlex.split(cmd.shell) == list(cmd.argv)


def test_go_symbol_is_quoted() -> None:
    where = site_for(REGEN)
    assert (where.text, where.kind) == (f'"{REGEN}"', "name")


def test_star_that_would_expand_to_more_falls_back_to_address() -> None:
    # bpftrace 0.17 expands '*' even inside quotes: (*Endpoint) also matches (*XEndpoint).
    other = "github.com/cilium/cilium/pkg/endpoint.(*XEndpoint).regenerate"
    where = site_for(REGEN, (other,))
    assert (where.text, where.kind, where.unsafe) == ("0x401655", "address", False)


def test_duplicate_name_falls_back_to_address() -> None:
    assert site_for("helper.part.0", ("helper.part.0",)).kind == "address"


def test_stripped_address_is_a_file_offset_with_unsafe() -> None:
    where = site_for('bad"name', stripped=True, offset=0x1655)
    assert (where.text, where.unsafe) == ("0x1655", True)
    cmd = emit.command("proc-root", 7, "/bin/x", where)
    assert cmd is not None and cmd.argv[:2] == ("bpftrace", "--unsafe")


def test_unnameable_stripped_symbol_without_offset() -> None:
    sym = Symbol('a"b', 0x10, 1, "dynsym")
    assert emit.site(sym, emit.NameIndex([sym]), None, True) is None


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
    where = site_for(name)
    cmd = emit.command("proc-root", 1, "/proc/1/root/bin/x", where)
    assert cmd is not None
    assert shlex.split(cmd.shell) == list(cmd.argv)
    prog = cmd.argv[-1]
    if where.kind == "name":
        # Inside one "..." literal with no quote or backslash that could end it.
        assert where.text == f'"{name}"'
        assert '"' not in name and "\\" not in name and "\n" not in name
    else:
        assert where.text == "0x401655"
        assert name not in prog


@pytest.mark.parametrize("path", ['/tmp/a"b/x', "/tmp/new\nline/x", "/tmp/bs\\x"])
def test_unquotable_path_gives_no_command(path: str) -> None:
    assert emit.command("proc-root", 1, path, site_for("hello")) is None


def test_path_with_space_is_quoted() -> None:
    cmd = emit.command("proc-root", 1, "/opt/my app/x", site_for("hello"))
    assert cmd is not None
    assert cmd.argv[-1].startswith('uprobe:"/opt/my app/x":hello ')
    assert shlex.split(cmd.shell) == list(cmd.argv)


def test_name_index_glob_hits() -> None:
    syms = [Symbol(n, i + 1, 1, "symtab") for i, n in enumerate(["a(*T).m", "a(*UT).m", "a(*T).mm", "b"])]
    index = emit.NameIndex(syms)
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


def test_combined_program_filters_each_pid() -> None:
    a = emit.points("/proc/10/root/bin/x", emit.Site("hello", "name"))
    b = emit.points("/proc/20/root/bin/y", emit.Site("0x401000", "address", unsafe=True))
    cmd = emit.combined([(10, a, False), (20, b, True)])
    assert cmd.argv[:2] == ("bpftrace", "--unsafe") and "-p" not in cmd.argv
    assert cmd.argv[-1] == (
        "uprobe:/proc/10/root/bin/x:hello, uprobe:/proc/20/root/bin/y:0x401000 /pid == 10 || pid == 20/ "
        '{ printf("%s\\n", ustack); }'
    )
    assert shlex.split(cmd.shell) == list(cmd.argv)
