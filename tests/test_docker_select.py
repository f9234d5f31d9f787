"""Pure parts of the docker resolver: which containers a target names, and the pid-filter command."""

from __future__ import annotations

import shlex

import pytest

from ctrace.bpftrace import emit
from ctrace.errors import UsageError
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers import docker
from ctrace.resolvers.base import Context

if TYPE_CHECKING:
    from ctrace.resolvers.engine import Summary  # a TypedDict: mypy's only

A = "e09f75739d59" + "0" * 52
B = "872ae883e81e" + "1" * 52
C = "e09fffffffff" + "2" * 52
LISTED: list[Summary] = [
    {"Id": A, "Names": ["/cilium-agent"], "Image": "x"},
    {"Id": B, "Names": ["/cilium-agent-2"], "Image": "x"},
    {"Id": C, "Names": ["/web"], "Image": "y"},
]


def ids(found: list[Summary]) -> list[str]:
    return [s["Id"] for s in found]


def test_exact_name_wins_over_prefix() -> None:
    assert ids(docker.select(LISTED, "cilium-agent", take_all=False)) == [A]


def test_full_and_short_id() -> None:
    assert ids(docker.select(LISTED, B, take_all=False)) == [B]
    assert ids(docker.select(LISTED, B[:12], take_all=False)) == [B]


def test_prefix_matching_several_lists_them_all_or_takes_all() -> None:
    with pytest.raises(UsageError) as err:
        docker.select(LISTED, "cilium", take_all=False)
    assert "cilium-agent (e09f75739d59)" in err.value.message and "cilium-agent-2 (872ae883e81e)" in err.value.message
    assert "--all" in err.value.hint
    assert ids(docker.select(LISTED, "cilium", take_all=True)) == [A, B]
    with pytest.raises(UsageError):
        docker.select(LISTED, "e09f", take_all=False)  # an ID prefix of two containers


def test_short_hex_is_not_an_id_prefix() -> None:
    # 'e09' could be an ID prefix, but 3 hex digits name a process far more often
    assert docker.select(LISTED, "e09", take_all=False) == []
    assert docker.select(LISTED, "nothing", take_all=False) == []


def test_claims_is_cheap_and_syntactic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")  # configured, never contacted
    ctx = Context()
    assert docker.claims("cilium-agent", ctx)
    for target in ("pid:12", "12", "/usr/bin/x", "a b", "-x"):
        assert not docker.claims(target, ctx), target


def test_pid_filter_command_round_trips() -> None:
    text = (
        'uprobe:/var/lib/docker/overlay2/abc/merged/usr/bin/x:"pkg.(*T).m" /pid == 4242/ { printf("%s\\n", ustack); }'
    )
    cmd = emit.command("merged", 4242, text, with_p=False)
    assert cmd.argv == ("bpftrace", "-e", text)
    assert tuple(shlex.split(cmd.shell)) == cmd.argv
