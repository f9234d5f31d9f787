"""The fan-out's logic (issue 21) on captured pod JSON and a loopback agent replaying captured
events: who is attached, labels, merging, follow, failures, exit codes, the 403 line, RBAC."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctrace.agent import protocol
from ctrace.fanout import client, follow, members, merge
from ctrace.fanout.agents import Directory
from ctrace.run import flame
from tests.conftest import ROOT
from tests.fanout_fakes import Agent, Api, pod, uid

AGENTS = [
    pod("ctrace-agent-a", "node1", uid(91), owner="ctrace-agent", namespace="ctrace-system"),
    pod("ctrace-agent-b", "node2", uid(92), owner="ctrace-agent", namespace="ctrace-system"),
]


# ---- which pods, and where


def test_agents_are_the_daemonsets_own_ready_pods_only() -> None:
    lookalike = pod("ctrace-agent-x", "node3", uid(93), namespace="ctrace-system")  # same labels, no owner
    other_owner = pod("ctrace-agent-y", "node4", uid(94), owner="evil", namespace="ctrace-system")
    not_ready = pod("ctrace-agent-z", "node5", uid(95), owner="ctrace-agent", ready=False)
    found = members.agents([*AGENTS, lookalike, other_owner, not_ready])
    assert found == {"node1": "ctrace-agent-a", "node2": "ctrace-agent-b"}


def test_locality_is_by_identity_not_by_seeing_pids() -> None:
    assert members.is_local("node1", None, "node1", None)  # in the agent: NODE_NAME
    assert not members.is_local("node2", "m2", "node1", "m2")  # NODE_NAME wins over a machine-id
    assert members.is_local("node1", "abc", None, "abc")
    assert not members.is_local("node1", "abc", None, "def")
    assert not members.is_local("node1", None, None, "abc")  # the node's machineID unread: not local


# ---- follow


def test_tracker_attaches_ready_pods_and_says_the_others() -> None:
    t = follow.Tracker(None)
    got = t.start([pod("web-1", "node1", uid(1)), pod("web-2", "node2", uid(2), ready=False, phase="Pending")])
    assert [c.line() for c in got] == [
        "+ pod/web-1 on node1",
        "! pod/web-2: it is not ready (phase Pending); not traced (yet)",
    ]
    assert [c.line() for c in t.update("MODIFIED", pod("web-2", "node2", uid(2)))] == ["+ pod/web-2 on node2"]
    assert t.update("MODIFIED", pod("web-2", "node2", uid(2))) == []  # same container: no second run
    (leaving,) = follow.Tracker(None).start([pod("web-9", "node1", uid(9), deleting=True)])
    assert leaving.line() == "- pod/web-9: deleted (not traced)"  # leaving as the run starts: no failure


def test_tracker_follows_scale_up_deletion_and_restart() -> None:
    t = follow.Tracker(None)
    t.start([pod("web-1", "node1", uid(1))])
    assert t.update("ADDED", pod("web-3", "node2", uid(3), ready=False, phase="Pending")) == []
    (plus,) = t.update("MODIFIED", pod("web-3", "node2", uid(3)))
    assert plus.line() == "+ pod/web-3 on node2" and plus.member is not None and plus.member.node == "node2"
    (minus,) = t.update("MODIFIED", pod("web-1", "node1", uid(1), deleting=True))
    assert minus.line() == "- pod/web-1: deleted"
    assert t.update("DELETED", pod("web-1", "node1", uid(1), deleting=True)) == []  # said once
    assert t.update("MODIFIED", pod("web-3", "node2", uid(3), ready=False)) == []  # a readiness blip
    (again,) = t.update("MODIFIED", pod("web-3", "node2", uid(3), cid="c2"))
    assert again.line() == "+ pod/web-3 on node2 (restarted)"


# ---- labels and merging


def test_events_are_labelled_by_node_pod_and_container() -> None:
    m = members.Member("default", "web-1", uid(1), "node1", "app", "c1")
    event = merge.labelled({"pid": 7, "func": "tick", "frames": ["tick", "main"]}, m)
    assert merge.event_text(event) == [
        "[node1 default/web-1 app] pid 7 tick",
        "[node1 default/web-1 app]     tick",
        "[node1 default/web-1 app]     main",
    ]
    args = merge.labelled({"pid": 7, "func": "f", "args": ["0x1", "0x2"], "node": "agent-says"}, m)
    assert merge.event_text(args) == ["[agent-says default/web-1 app] pid 7 f(0x1, 0x2)"]
    assert json.loads(merge.event_json(event))["container"] == "app"


def test_aggregates_merge_to_per_pod_rows_and_a_total() -> None:
    merged = merge.Merged()
    merged.add(
        "count", [_row("node1", "web-1", 7, 600), _row("node1", "web-1", 8, 400), _row("node2", "web-2", 9, 1500)]
    )
    assert merged.table() == [
        "NODE   POD            CONTAINER  FUNCTION  CALLS",
        "node1  default/web-1  app        tick      1000",
        "node2  default/web-2  app        tick      1500",
        "total  2 pods                    tick      2500",
    ]
    assert merged.totals() == {"tick": 2500}


def test_latency_merges_buckets_and_stacks_fold_with_the_pod_first() -> None:
    lat = merge.Merged()
    lat.add("latency", [{**_row("node1", "web-1", 7, 0), "buckets": [[1, 2, 90], [512, 1024, 10]]}])
    lat.add("latency", [{**_row("node2", "web-2", 9, 0), "buckets": [[1, 2, 100]]}])
    table = lat.table()
    assert table[-1].split() == ["total", "2", "pods", "tick", "200", "<2us", "<1024us"]
    st = merge.Merged()
    st.add("stacks", [{**_row("node1", "web-1", 7, 5), "frames": ["tick", "main"]}])
    st.add("stacks", [{**_row("node2", "web-2", 9, 3), "frames": ["tick", "main"]}])
    assert flame.fold(st.folded()) == "default/web-1;main;tick 5\ndefault/web-2;main;tick 3\n"
    assert "       8  tick  (node1 default/web-1: 5, node2 default/web-2: 3)" in st.table()


def _row(node: str, name: str, pid: int, n: int) -> dict[str, Any]:
    return {
        "pid": pid,
        "func": "tick",
        "count": n,
        "node": node,
        "namespace": "default",
        "pod": name,
        "container": "app",
    }


# ---- the whole client against loopback agents


class Cluster:
    def __init__(self, pods: list[dict[str, Any]], agents: dict[str, Agent], agent_pods: list[Any] = AGENTS) -> None:
        self.agents = agents
        self.api = Api(pods, agents, agent_pods)
        self.out, self.err = io.StringIO(), io.StringIO()

    def run(self, duration: float = 2.5, action: str = "count", json_out: bool = False) -> int:
        opts = client.Options("deploy/web", ("tick",), action, duration=duration, json=json_out)
        return client.run(opts, self.api, Directory(self.api, "ctrace-system"), self.out, self.err)  # type: ignore[arg-type]

    def later(self, seconds: float, kind: str, p: dict[str, Any]) -> None:
        threading.Timer(seconds, self.api.events.put, ((kind, p),)).start()


def _two_nodes(**kw: Any) -> Cluster:
    a, b = Agent("node1", **kw), Agent("node2")
    for agent, n in ((a, 1), (b, 2)):
        agent.events = [protocol.Event(pid=40 + n, func="tick", args=(hex(n),), node=agent.node, container="app")]
        agent.rows = [protocol.Row(40 + n, "tick", calls=1000 * n, node=agent.node, container="app")]
    return Cluster(
        [pod("web-1", "node1", uid(1)), pod("web-2", "node2", uid(2))], {"ctrace-agent-a": a, "ctrace-agent-b": b}
    )


def test_one_command_traces_every_pod_labelled_and_merged() -> None:
    c = _two_nodes()
    assert c.run(action="args") == 0
    out = c.out.getvalue().splitlines()
    assert "[node1 default/web-1 app] pid 41 tick(0x1)" in out
    assert "[node2 default/web-2 app] pid 42 tick(0x2)" in out
    assert out[-3:] == [  # per-call events are counted too: one table at the end
        "node1  default/web-1  app        tick      1",
        "node2  default/web-2  app        tick      1",
        "total  2 pods                    tick      2",
    ]
    assert c.err.getvalue().splitlines() == ["+ pod/web-1 on node1", "+ pod/web-2 on node2"]
    for agent in c.agents.values():
        assert agent.stops == 1  # --duration ended: "stop" sent, the aggregate still came
        assert len(agent.pings) >= 1  # pinged while it lasted
        (run,) = agent.runs
        assert run.request.functions == ("tick",) and run.request.container == "app"
    assert c.api.forwards == ["ctrace-system/ctrace-agent-a:7117", "ctrace-system/ctrace-agent-b:7117"]


def test_count_aggregates_of_every_node_merge_into_one_table() -> None:
    c = _two_nodes()
    assert c.run(action="count") == 0
    assert c.out.getvalue().splitlines()[-1].split() == ["total", "2", "pods", "tick", "3000"]
    assert "node2  default/web-2  app        tick      2000" in c.out.getvalue()


def test_json_output_is_one_labelled_object_per_line() -> None:
    c = _two_nodes()
    assert c.run(action="args", json_out=True) == 0
    lines = [json.loads(line) for line in c.out.getvalue().splitlines()]
    events = [o for o in lines if o["type"] == "event"]
    assert {(e["node"], e["pod"], e["container"]) for e in events} == {
        ("node1", "web-1", "app"),
        ("node2", "web-2", "app"),
    }
    (agg,) = [o for o in lines if o["type"] == "aggregate"]
    assert agg["total"] == [{"func": "tick", "count": 2}] and len(agg["pods"]) == 2


def test_new_pod_is_attached_and_a_deleted_one_said() -> None:
    c = _two_nodes()
    c.later(0.3, "ADDED", pod("web-3", "node2", uid(3)))
    c.later(0.6, "MODIFIED", pod("web-1", "node1", uid(1), deleting=True))
    t0 = time.monotonic()
    assert c.run(duration=2.0, action="args") == 0
    err = c.err.getvalue().splitlines()
    assert "+ pod/web-3 on node2" in err and "- pod/web-1: deleted" in err
    assert "[node2 default/web-3 app] pid 42 tick(0x2)" in c.out.getvalue()
    assert time.monotonic() - t0 < 2.0 + client.STOP_WAIT


def test_a_node_without_agent_is_one_line_and_the_rest_go_on() -> None:
    c = _two_nodes()
    c.api.agent_pods = AGENTS[:1]
    assert c.run(action="args") == 1
    err = c.err.getvalue()
    assert "! pod/web-2 on node2: no ready ctrace agent runs on node node2" in err
    assert err.splitlines()[-1].startswith("ctrace: not traced: pod/web-2 (no ready ctrace agent")
    assert "[node1 default/web-1 app] pid 41 tick(0x1)" in c.out.getvalue()


def test_version_mismatch_is_one_clear_line() -> None:
    c = _two_nodes(version="9.9.9")
    assert c.run() == 1
    said = f"this ctrace is {protocol.VERSION}, the ctrace agent on node node1 is 9.9.9; they must be the same"
    assert f"! pod/web-1 on node1: version mismatch: {said}" in c.err.getvalue().splitlines()


def test_an_agent_that_refuses_is_named_with_its_reason() -> None:
    c = _two_nodes(refuse="user programs are not allowed on this agent")
    assert c.run() == 1
    assert "! pod/web-1 on node1: user programs are not allowed on this agent" in c.err.getvalue()


def test_a_pod_whose_process_went_away_is_said_and_counts_as_traced() -> None:
    c = _two_nodes()
    c.agents["ctrace-agent-a"].end_after = (protocol.GONE, "the traced process exited")
    assert c.run(duration=1.5) == 0
    assert "- pod/web-1: the traced process exited" in c.err.getvalue()


def test_a_bad_pattern_is_a_usage_error_before_any_agent_is_asked() -> None:
    m = members.Member("default", "web-1", uid(1), "node1", "app", "c1")
    with pytest.raises(Exception, match="^--func 'x;rm' holds ';'"):
        client.request_for(client.Options("deploy/web", ("x;rm",), "count"), m)
    c = _two_nodes()
    bad = client.Options("deploy/web", ("x;rm",), "count")
    with pytest.raises(Exception, match="^--func"):
        client.run(bad, c.api, Directory(c.api, "ctrace-system"), c.out, c.err)  # type: ignore[arg-type]
    assert c.err.getvalue() == "" and c.api.forwards == []  # nothing listed, nothing said, no agent asked


# ---- permissions


def test_forbidden_names_verb_resource_and_namespace() -> None:
    from ctrace.resolvers.apierrors import forbidden

    body = json.dumps({"message": 'pods "a" is forbidden: User "bob" cannot create resource "pods/portforward" '
                       'in API group "" in the namespace "ctrace-system"'})  # fmt: skip
    want = 'User "bob" cannot create resource "pods/portforward" in the namespace "ctrace-system"'
    assert forbidden(body) == want
    assert forbidden(f"Handshake status 403 Forbidden -+-+- {{}} -+-+- {body.encode()!r}") == want


def _rbac() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "manifests/rbac-user.yaml").read_text()) if d]


def test_ctrace_user_role_is_exactly_what_the_plugin_needs() -> None:
    cluster_role, role = _rbac()
    assert (cluster_role["kind"], cluster_role["metadata"]["name"]) == ("ClusterRole", "ctrace-user")
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "daemonsets", "statefulsets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
    ]
    assert (role["kind"], role["metadata"]["namespace"]) == ("Role", "ctrace-system")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]},
    ]


def test_no_role_a_user_binds_grants_exec() -> None:
    for doc in _rbac():
        for rule in doc["rules"]:
            assert not {"pods/exec", "pods/attach", "*"} & set(rule["resources"]), rule
            assert "*" not in rule["verbs"]
    readme = (ROOT / "README.md").read_text()
    binds = [line for line in readme.splitlines() if "kubectl create" in line and "binding" in line]
    assert binds and all("ctrace-user" in line for line in binds)
    assert "--clusterrole=ctrace-user" in readme and "--role=ctrace-user" in readme


def test_a_pod_on_this_very_node_runs_here_not_through_its_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    from ctrace.fanout import local

    c = _two_nodes()
    monkeypatch.setenv("NODE_NAME", "node1")  # as in the agent: this machine is node1
    lines = [protocol.Started((7,), ()), protocol.Aggregate("count", (protocol.Row(7, "tick", calls=5),))]
    started, at_end = (protocol.encode(m).decode().strip() for m in lines)
    end = protocol.encode(protocol.End(130, "stopped")).decode().strip()
    child = ["python3", "-c", f"import sys, time\nprint({started!r}, flush=True)\ntry:\n    time.sleep(30)\n"
             f"except KeyboardInterrupt:\n    print({at_end!r})\n    print({end!r})\n    sys.exit(130)\n"]  # fmt: skip
    monkeypatch.setattr(local, "argv", lambda run, m, flags: child)
    assert c.run(duration=1.5, action="count") == 0  # the child stopped as by Ctrl-C, and its rows merged
    assert c.api.forwards == ["ctrace-system/ctrace-agent-b:7117"]  # node2 only: node1 is here
    assert "node1  default/web-1  app        tick      5" in c.out.getvalue()
    assert c.out.getvalue().splitlines()[-1].split() == ["total", "2", "pods", "tick", "2005"]


def test_every_pod_on_this_node_leaves_it_to_the_local_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "node1")
    c = Cluster([pod("web-1", "node1", uid(1))], {})
    assert c.run() is None and c.api.forwards == []


def test_ctrl_c_stops_every_agent_and_still_prints_the_merged_table() -> None:
    import os
    import signal

    c = _two_nodes()
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    assert c.run(duration=30, action="count") == 130
    assert time.monotonic() - t0 < 1.0 + client.STOP_WAIT
    assert all(agent.stops == 1 for agent in c.agents.values())
    assert c.out.getvalue().splitlines()[-1].split() == ["total", "2", "pods", "tick", "3000"]


def test_folded_and_flamegraph_are_one_file_for_the_workload(tmp_path: Path) -> None:
    c = _two_nodes()
    for agent in c.agents.values():
        agent.rows = [r._replace(frames=("tick", "tick_loop", "main")) for r in agent.rows]
    folded, svg = tmp_path / "web.folded", tmp_path / "web.svg"
    opts = client.Options("deploy/web", ("tick",), "stacks", duration=1.0, folded=str(folded), flamegraph=str(svg))
    assert client.run(opts, c.api, Directory(c.api, "ctrace-system"), c.out, c.err) == 0  # type: ignore[arg-type]
    assert folded.read_text() == "default/web-1;main;tick_loop;tick 1000\ndefault/web-2;main;tick_loop;tick 2000\n"
    assert "default/web-2" in svg.read_text()
    assert "    3000  tick  (node1 default/web-1: 1000, node2 default/web-2: 2000)" in c.out.getvalue()


def test_an_agent_pod_that_does_not_listen_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    c = _two_nodes()
    mute = socket.create_server(("127.0.0.1", 0))  # accepts, says nothing, closes: a pod running sleep
    threading.Thread(target=lambda: mute.accept()[0].close(), daemon=True).start()
    c.agents["ctrace-agent-b"].port = mute.getsockname()[1]
    assert c.run(action="args", duration=1.5) == 1
    said = "! pod/web-2 on node2: agent pod ctrace-agent-b did not answer on 127.0.0.1:7117"
    said += " (does it run the ctrace agent command of manifests/agent.yaml?)"
    (line,) = [line for line in c.err.getvalue().splitlines() if line.startswith("! pod/web-2")]
    assert line.startswith(said + ": the connection "), line  # closed, or reset: the run's request was unread
