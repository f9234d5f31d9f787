"""Issue 21 on the real local cluster (hack/cluster.sh: two worker nodes, each its own containerd,
kubelet, hostname and machine-id): one command over every replica on both nodes, through each
node's agent, followed as pods come and go, ended cleanly however the client ends."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import fanout_cluster as fc
from tests.fanout_cluster import Cluster

pytestmark = pytest.mark.cluster

NODES = ("ctrace-worker1", "ctrace-worker2")
NS = "fanout-test"
RATE = 50  # calls a second per pod: every event printed, none lost
EVENT = re.compile(r"^\[(\S+) ([\w.-]+)/([\w.-]+) (\S+)\] pid (\d+) tick\((0x[0-9a-f]+)")


@pytest.fixture(scope="module")
def web(cluster: Cluster) -> Iterator[Cluster]:
    fc.tick_image(cluster)
    fc.agents(cluster)
    cluster.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", timeout=240)
    cluster.kubectl("create", "namespace", NS)
    cluster.apply(fc.deployment("web", NS, 2, RATE))
    cluster.rollout("deploy/web", NS)
    yield cluster
    cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def _client(kubeconfig: Path, *args: str, agents: str = fc.AGENT_NS) -> fc.Client:
    return fc.Client(kubeconfig, *args, "--agent-namespace", agents)


def _placed(cluster: Cluster) -> dict[str, str]:
    """Pod -> node, of the pods the scheduler has placed (a new replica has no node for a moment)."""
    found = fc.pods(cluster, NS, "app=web").items()
    return {name: p["spec"]["nodeName"] for name, p in found if p["spec"].get("nodeName")}


def _events(client: fc.Client) -> dict[str, list[int]]:
    """Sequence numbers (tick's arg0) per pod, from the labelled lines."""
    seen: dict[str, list[int]] = {}
    for line in client.lines():
        m = EVENT.match(line)
        if m:
            seen.setdefault(f"{m.group(1)} {m.group(3)}", []).append(int(m.group(6), 16))
    return seen


def _no_bpftrace_within(cluster: Cluster, seconds: float) -> dict[str, list[int]]:
    """{} once no agent of these tests runs bpftrace, else what still runs after ``seconds``."""
    if fc.wait_until(lambda: not any(fc.bpftrace_on(cluster).values()), seconds):
        return {}
    return fc.bpftrace_on(cluster)


def test_one_command_traces_both_nodes_labelled_and_merged(web: Cluster) -> None:
    placed = _placed(web)
    assert set(placed.values()) == set(NODES), placed  # one replica on each node
    client = _client(web.kubeconfig, "deploy/web", "-n", NS, "--func", "tick", "--action", "args", "--duration", "8")
    assert client.wait(60) == 0, client.text()
    seen = _events(client)
    assert set(seen) == {f"{node} {pod}" for pod, node in placed.items()}, client.text()
    for key, seqs in seen.items():
        assert len(seqs) >= RATE * 2, key  # 8 s at RATE/s, minus the attach (a cold agent: ctrace, bpftrace)
        # bpftrace reads one perf buffer per CPU, so a call that ran on the other CPU may print a
        # little later than the next one: the set of calls is the truth, not their order
        assert sorted(seqs) == list(range(min(seqs), min(seqs) + len(seqs))), f"{key}: a call was lost or repeated"
    rows = [line.split() for line in client.lines() if line.split()[:1] in (["total"], *([n] for n in NODES))]
    per_pod = {(r[0], r[1]): int(r[-1]) for r in rows if r[0] != "total"}
    assert per_pod == {(node, f"{NS}/{pod}"): len(seen[f"{node} {pod}"]) for pod, node in placed.items()}
    assert rows[-1][:3] == ["total", "2", "pods"] and int(rows[-1][-1]) == sum(per_pod.values())
    assert {f"+ pod/{pod} on {node}" for pod, node in placed.items()} <= set(client.lines("err"))


def test_json_lines_carry_node_pod_and_container(web: Cluster) -> None:
    client = _client(
        web.kubeconfig, "deploy/web", "-n", NS, "--func", "tick", "--action", "args", "--duration", "3", "-o", "json"
    )
    assert client.wait(60) == 0, client.text()
    objs = [json.loads(line) for line in client.lines()]
    events = [o for o in objs if o["type"] == "event"]
    assert {(e["node"], e["namespace"], e["container"]) for e in events} == {(n, NS, "tick") for n in NODES}
    assert objs[-1]["type"] == "aggregate" and objs[-1]["total"][0]["count"] == len(events)


def test_follow_scale_up_delete_and_ctrl_c(web: Cluster) -> None:
    client = _client(web.kubeconfig, "deploy/web", "-n", NS, "--func", "tick", "--action", "args")
    try:
        assert client.first(lambda line: bool(EVENT.match(line)), timeout=30), client.text()
        before = set(_placed(web))
        web.kubectl("scale", "deploy/web", "-n", NS, "--replicas=3")
        new = fc.wait_until(lambda: set(_placed(web)) - before, 60)
        (added,) = new
        web.kubectl("wait", "--for=condition=Ready", f"pod/{added}", "-n", NS, "--timeout=120s", timeout=150)
        ready_at = time.monotonic()
        node = _placed(web)[added]
        plus = client.first(lambda line: line == f"+ pod/{added} on {node}", "err", timeout=30)
        assert plus is not None, client.text()
        assert plus - ready_at < 5.0, f"attached {plus - ready_at:.1f}s after Ready"
        assert client.first(lambda line: f"{node} {NS}/{added} " in line, timeout=15), client.text()
        gone = sorted(before)[0]
        web.kubectl("delete", "pod", gone, "-n", NS, "--wait=false")
        assert client.first(lambda line: line == f"- pod/{gone}: deleted", "err", timeout=30), client.text()
        client.signal(signal.SIGINT)
        assert client.wait(30) == 130, client.text()
    finally:
        client.kill()
    total = client.lines()[-1].split()
    assert total[:3] == ["total", "3", "pods"] and int(total[-1]) > 0, client.text()  # the merged table, after Ctrl-C
    left = _no_bpftrace_within(web, 5)
    assert not any(left.values()), f"bpftrace left after Ctrl-C: {left}"
    _respread(web)


def _respread(cluster: Cluster) -> None:
    """Two replicas again, one on each node (a scale-down keeps whichever pods it keeps)."""
    cluster.kubectl("scale", "deploy/web", "-n", NS, "--replicas=0")
    fc.wait_until(lambda: not _placed(cluster), 60)
    cluster.kubectl("scale", "deploy/web", "-n", NS, "--replicas=2")
    cluster.rollout("deploy/web", NS)


def test_sigkill_of_the_client_leaves_no_bpftrace_on_any_node(web: Cluster) -> None:
    client = _client(web.kubeconfig, "deploy/web", "-n", NS, "--func", "tick", "--action", "count")
    try:
        running = fc.wait_until(lambda: all(fc.bpftrace_on(web)[n] for n in set(_placed(web).values())), 30)
        assert running, f"bpftrace did not start on every node: {fc.bpftrace_on(web)}\n{client.text()}"
    finally:
        client.kill()  # SIGKILL: no "stop", the port-forwards just vanish
    killed = time.monotonic()
    left = _no_bpftrace_within(web, 10)
    assert not any(left.values()), f"bpftrace still runs {time.monotonic() - killed:.0f}s after kill -9: {left}"


def test_a_node_without_agent_is_one_line_and_the_other_node_still_traced(web: Cluster) -> None:
    """Agents of the ctrace-agent DaemonSet of a namespace of their own on one node only, and on
    the other node a pod that looks like an agent (same labels, Ready) but is another DaemonSet's
    (a bare pod with those labels would be adopted by ctrace-agent): ignored."""
    ns = "fanout-one-agent"
    web.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", timeout=240)
    fc.agents(web, ns, node=NODES[0])
    ds = json.loads(web.kubectl("get", "ds/ctrace-agent", "-n", ns, "-o", "json").stdout)
    template = ds["spec"]["template"]
    template["spec"]["nodeSelector"] = {"kubernetes.io/hostname": NODES[1]}
    other = {"name": "lookalike", "namespace": ns}
    spec = {"selector": ds["spec"]["selector"], "template": template}
    web.apply(json.dumps({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": other, "spec": spec}))
    web.rollout("ds/lookalike", ns)
    try:
        client = _client(
            web.kubeconfig, "deploy/web", "-n", NS, "--func", "tick", "--action", "args", "--duration", "4", agents=ns
        )
        assert client.wait(60) == 1, client.text()
        placed = {m[1]: m[2] for m in (re.match(r"^\+ pod/(\S+) on (\S+)$", x) for x in client.lines("err")) if m}
        far = sorted(p for p, n in placed.items() if n == NODES[1])
        near = sorted(p for p, n in placed.items() if n == NODES[0])
        assert far and near, client.text()  # the workload is on both nodes
        lines = [line for line in client.lines("err") if line.startswith("! ")]
        assert lines == [f"! pod/{p} on {NODES[1]}: no ready ctrace agent runs on node {NODES[1]} "
                         f"(DaemonSet ctrace-agent in namespace {ns})" for p in far], client.text()  # fmt: skip
        assert set(_events(client)) == {f"{NODES[0]} {p}" for p in near}, client.text()
        assert client.lines("err")[-1].startswith(f"ctrace: not traced: pod/{far[0]} ("), client.text()
    finally:
        web.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_unprivileged_user_traces_with_ctrace_user_and_is_told_what_is_missing_without(web: Cluster) -> None:
    user = "ctrace-user"  # hack/cluster.sh's token user
    web.kubectl("delete", "clusterrolebinding", "fanout-test-user", "--ignore-not-found", check=False)
    web.kubectl("delete", "rolebinding", "fanout-test-user", "-n", fc.AGENT_NS, "--ignore-not-found", check=False)
    denied = _client(web.user_kubeconfig, "deploy/web", "-n", NS, "--func", "tick", "--duration", "3")
    assert denied.wait(60) == 3, denied.text()
    (line, hint) = denied.lines("err")
    assert line == (f'ctrace: error: the API server forbids it: User "{user}" cannot get resource "deployments" '
                    f'in API group "apps" in the namespace "{NS}" (403 Forbidden)'), denied.text()  # fmt: skip
    assert "ctrace-user" in hint
    cluster_role, role = [d for d in yaml.safe_load_all((fc.ROOT / "manifests" / "rbac-user.yaml").read_text()) if d]
    role["metadata"]["namespace"] = fc.AGENT_NS  # the tests' agents: the same Role where they run
    web.apply(json.dumps(cluster_role))
    web.apply(json.dumps(role))
    web.kubectl("create", "clusterrolebinding", "fanout-test-user", "--clusterrole=ctrace-user", f"--user={user}")
    web.kubectl("create", "rolebinding", "fanout-test-user", "-n", fc.AGENT_NS, "--role=ctrace-user", f"--user={user}")
    try:
        for verb, sub in (("create", "exec"), ("get", "exec"), ("get", "portforward"), ("create", "portforward")):
            said = web.kubectl(  # "pods/exec" would be a pod named exec: the subresource is a flag
                "auth", "can-i", verb, "pods", f"--subresource={sub}", "-n", fc.AGENT_NS, f"--as={user}", check=False
            )
            assert said.stdout.strip() == ("yes" if sub == "portforward" else "no"), (verb, sub)
        allowed = _client(
            web.user_kubeconfig, "deploy/web", "-n", NS, "--func", "tick", "--action", "args", "--duration", "4"
        )
        assert allowed.wait(60) == 0, allowed.text()
        assert {k.split()[0] for k in _events(allowed)} == set(NODES), allowed.text()
    finally:
        web.kubectl("delete", "clusterrolebinding", "fanout-test-user", check=False)
        web.kubectl("delete", "rolebinding", "fanout-test-user", "-n", fc.AGENT_NS, check=False)
