"""``--run -e PROGRAM``: the user's program, its placeholders filled, each probe bound to the target."""

from __future__ import annotations

import re

import pytest

from ctrace.agent import program
from ctrace.errors import UsageError
from tests.conftest import Bpftrace, Built, Processes, ctrace, program_warnings


def test_each_probe_gets_the_binding_and_keeps_its_own_predicate() -> None:
    text = (
        "config = { max_map_keys = 100 }\n#include <linux/sched.h>\n"
        'BEGIN { if (1) { printf("{ not a block }\\n"); } }\n'
        "uprobe:/bin/x:f, uretprobe:/bin/x:g /arg0 / 2 > 1/ { @a[pid] = count(); }  // a comment { \n"
        'u:/bin/x:h { printf("/ not a predicate /"); }\n'
        "interval:s:1 { print(@a); } /* { */ END { print(@a) }"
    )
    probes, begin, end = program.bound(text, "@ctrace_pids[pid]")
    assert begin == ['if (1) { printf("{ not a block }\\n"); }']
    assert end == ["print(@a);"]
    assert "config = { max_map_keys = 100 }" in probes and "#include <linux/sched.h>" in probes
    assert (
        "uprobe:/bin/x:f, uretprobe:/bin/x:g /(@ctrace_pids[pid]) && (arg0 / 2 > 1)/ { @a[pid] = count(); }" in probes
    )
    assert 'u:/bin/x:h /@ctrace_pids[pid]/ { printf("/ not a predicate /"); }' in probes
    assert "interval:s:1 { print(@a); }" in probes  # a timer runs in no process of the target


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("uprobe:/bin/x:f { @c = count() ", "'{' without its '}'"),
        ('uprobe:/bin/x:f { printf("x); }', "string without its closing quote"),
        ("uprobe:/bin/x:f /pid > 1 { }", "no closing '/'"),
        ("/* nothing */", "no probe"),
        ("uprobe:/bin/x:f { } garbage", "outside a block"),
    ],
)
def test_a_broken_program_is_one_line(text: str, said: str) -> None:
    with pytest.raises(UsageError) as err:
        program.bound(text, "pid == 1")
    assert said in err.value.message


def test_placeholders_as_kubectl_trace_spells_them() -> None:
    values = program.Values('"/proc/7/root/my app"', 7, 3)
    got = program.substituted('uprobe:$path:f { printf("%d %d", $pid, $container_pid); $pidx = 1; }', values)
    assert got == 'uprobe:"/proc/7/root/my app":f { printf("%d %d", 7, 3); $pidx = 1; }'


@pytest.mark.bpftrace
def test_the_program_sees_its_target_and_not_the_decoy(built: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    proc = processes.start(built["hello"])
    decoy = processes.start(built["hello"])  # the same file: a uprobe on it fires in both
    prog = 'BEGIN { printf("target %d %d\\n", $pid, $container_pid); } uprobe:$path:hello { @calls[pid] = count(); }'
    printed = ctrace("target", f"pid:{proc.pid}", "-e", prog, *bpftrace.args)
    assert printed.code == 0, printed.err
    res = ctrace("target", f"pid:{proc.pid}", "-e", prog, "--run", "--duration", "3", *bpftrace.args)
    assert res.code == 0, res.err
    assert not program_warnings(res.err, ["bpftrace"]), res.err
    assert f"target {proc.pid} {proc.pid}" in res.out
    counted = dict(re.findall(r"^@calls\[(\d+)\]: (\d+)$", res.out, re.M))
    assert list(counted) == [str(proc.pid)] and int(counted[str(proc.pid)]) >= 5, res.out
    assert str(decoy.pid) not in res.out


def test_program_flags_that_would_be_ignored_are_refused() -> None:
    for extra, flag in (
        (["--func", "f"], "--func"),
        (["--action", "count"], "--action"),
        (["--probe", "return"], "--probe"),
    ):
        res = ctrace("target", "pid:1", "-e", "uprobe:$path:f { }", *extra)
        assert res.code == 2 and f"{flag} has no place beside it" in res.err, res.err
