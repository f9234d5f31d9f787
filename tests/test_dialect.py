"""The dialect: read from the bpftrace that will run the program, once per binary."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ctrace.bpftrace import dialect
from tests.conftest import Bpftrace, Built, Processes, ctrace


@pytest.mark.parametrize(
    ("text", "version"),
    [("bpftrace v0.23.2\n", (0, 23, 2)), ("bpftrace 0.17.0-1\n", (0, 17, 0)), ("v0.27\n", (0, 27, 0)), ("", None)],
)
def test_parse_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert dialect.parse_version(text) == version


def fake(tmp_path: Path, version: str) -> Path:
    """An executable that answers --version as a bpftrace of that version would."""
    path = tmp_path / "bpftrace"
    path.write_text(f"#!/bin/sh\necho 'bpftrace v{version}'\necho ran >> {tmp_path}/runs\n")
    path.chmod(0o755)
    return path


def test_version_read_once_per_binary(tmp_path: Path) -> None:
    path = fake(tmp_path, "0.23.2")
    cache = tmp_path / "cache"
    first = dialect.of(str(path), str(cache))
    assert (first.version, first.program, first.known) == ((0, 23, 2), str(path), True)
    assert dialect.of(str(path), str(cache)).version == (0, 23, 2)
    assert (tmp_path / "runs").read_text().count("ran") == 1  # the second came from the cache
    path.write_text(path.read_text().replace("0.23.2", "0.27.1"))  # a new binary at that path
    os.utime(path, ns=(1, 1))
    assert dialect.of(str(path), str(cache)).version == (0, 27, 1)


def test_facts_follow_the_version() -> None:
    old, mid, new = dialect.Dialect((0, 17, 0)), dialect.Dialect((0, 23, 2)), dialect.Dialect((0, 27, 1))
    assert not old.offset_probes and mid.offset_probes and new.offset_probes
    assert not old.pid_filters_uprobes and mid.pid_filters_uprobes
    assert not dialect.Dialect((0, 19, 0)).pid_filters_uprobes and dialect.Dialect((0, 20, 0)).pid_filters_uprobes
    assert old.delete("@s[tid]") == mid.delete("@s[tid]") == "delete(@s[tid]);"
    assert new.delete("@s[tid]") == "$gone = delete(@s[tid]);"
    assert not old.ns_pid_helper and mid.ns_pid_helper and new.ns_pid_helper


def test_in_a_child_pid_namespace_every_pid_is_read_at_its_level() -> None:
    """bpftrace/pidns.py: the binding and the actions use no pid or tid builtin there."""
    from ctrace.bpftrace import actions, binding, pidns

    ns = pidns.PidNs(4026532178, 1)
    d = dialect.Dialect((0, 17, 0), pidns=ns)
    one = binding.Scope(binding.PROCESSES, (binding.Member(42),))
    bound = binding.bind([one], d)
    block = actions.Block(("uprobe:/f:f",), bound.predicate, "f", "c", dialect=d, pid=bound.pid, tid=bound.tid)
    for name, row in actions.ACTIONS.items():
        text = binding.program(bound, row.program(block._replace(exits=("uretprobe:/f:f",))))
        assert text.startswith("BEGIN { @ctrace_pidns[4026532178] = 1; @ctrace_pids[42] = 1; }"), name
        assert "((struct upid *)(curtask->group_leader->thread_pid + 1) + 1)" in text, name
        assert f"/{pidns.tid_of(ns)} == 42/ {{ exit(); }}" in text, name
        assert re.search(r"(?<![>\w])(pid|tid)\b", text.replace("pid=%d", "")) is None, name
    host = binding.bind([one], dialect.Dialect((0, 17, 0)))
    assert (host.pid, host.tid, host.predicate) == ("pid", "tid", "@ctrace_pids[pid]")


def test_bad_bpftrace_paths(built: Built, processes: Processes, tmp_path: Path) -> None:
    proc = processes.start(built["hello"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "hello", "--bpftrace", str(tmp_path / "nope"))
    assert res.code == 3 and res.out == "" and "hint: give the path of a bpftrace binary" in res.err
    (tmp_path / "notbt").write_text("#!/bin/sh\necho hello\n")
    (tmp_path / "notbt").chmod(0o755)
    res = ctrace("target", f"pid:{proc.pid}", "--func", "hello", "--bpftrace", str(tmp_path / "notbt"))
    assert res.code == 3 and "did not print a bpftrace version" in res.err and res.err.count("\n") == 2


def test_printed_command_uses_the_given_bpftrace(built: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(built["hello"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "hello", "-q", *bpftrace.args)
    assert res.code == 0, res.err
    assert res.out.startswith(f"{bpftrace.path} -e ")


def test_without_bpftrace_the_oldest_form_and_a_warning(built: Built, processes: Processes, tmp_path: Path) -> None:
    proc = processes.start(built["hello"])
    env = {**os.environ, "PATH": str(tmp_path)}  # no bpftrace on it
    res = ctrace("target", f"pid:{proc.pid}", "--func", "hello", "-o", "json", env=env)
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    assert any("bpftrace was not found" in w and "0.17.0" in w for w in t["warnings"]), t["warnings"]


def test_a_stack_program_skips_the_symbol_cache_where_its_lookup_warns() -> None:
    """0.27 warns when it cannot canonicalize a container's /proc/PID/root path for ustack's
    symbol cache; the config block that turns the cache off is given to those releases only."""
    stack = 'uprobe:/proc/1/root/x:f { printf("%s\\n", ustack); }'
    count = "uprobe:/proc/1/root/x:f { @c[pid] = count(); }"
    old, mid, new = dialect.Dialect((0, 17, 0)), dialect.Dialect((0, 23, 2)), dialect.Dialect((0, 27, 1))
    assert old.configured(stack) == mid.configured(stack) == stack  # 0.17 has no config block
    assert new.configured(stack) == f'config = {{ cache_user_symbols = "NONE" }} {stack}'
    assert new.configured(count) == count


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("main.main.func1", True),
        ("pkg.(T).m", True),
        ("pkg.Q?x", True),  # '?' is not a bpftrace wildcard (util/wildcard.cpp)
        ("main.(*Book).Reconcile", False),
        ("main.F[go.shape.int_0]", False),
        ("a]b[c", False),  # '[' and ']' in any order, as has_wildcard reads them
        ("pkg.F[", True),
    ],
)
def test_a_wildcard_name_loses_its_offset(name: str, kept: bool) -> None:
    """0.23 and 0.27 attach ``"name"+N`` at the entry when bpftrace reads the name as a
    wildcard (issue 22, measured); 0.17 takes no ``sym+N`` at all."""
    assert dialect.Dialect((0, 23, 2)).keeps_offset(name) is kept
    assert dialect.Dialect((0, 27, 1)).keeps_offset(name) is kept
    assert dialect.Dialect((0, 17, 0)).keeps_offset(name) is False
