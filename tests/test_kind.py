"""The kind suite: `make kind-test` runs it on a real kind cluster where kind and its node images
exist (hack/kind-test.sh sets CTRACE_KIND_CONTEXT); everywhere else, `make test` runs it on the
local cluster of hack/cluster.sh (Kubernetes 1.20 from Debian's source, nodes as kind makes them).

Either way the nodes are docker containers on this host, so every pod's process is on this host's
/proc, three PID namespaces deep (host, node, pod); manifests/ are applied as they are, the agent
image is built here (hack/agent-image.sh: no registry) and the demo workload is
demo/cilium-agent, one replica per node.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from tests.cluster import Kube
from tests.conftest import ctrace, fire, need_bpftrace

REGEN = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"

pytestmark = [pytest.mark.kind]


def k(kube: Kube, *args: str) -> Any:
    res = ctrace(*args, *kube.where, "-o", "json")
    assert res.code == 0, res.err
    return res.json()


def test_daemonset_replicas_on_every_node_fire(kube: Kube) -> None:
    need_bpftrace()
    data = k(kube, "target", "ds/cilium", "-n", "kube-system", "--func", "regenerate")
    nodes = {t["pod"]["node"] for t in data["targets"]}
    assert nodes == kube.nodes() and len(nodes) >= 2
    for t in data["targets"]:
        assert len(t["nspid"]) == 3  # host -> node -> pod
        result = fire(t["probes"][0]["argv"], REGEN)
        assert result.fired, result.stderr


def test_every_replica_fires_inside_its_nodes_agent(kube: Kube) -> None:
    """In the agent of each replica's node (hostPID: the node's PID namespace), ctrace finds the
    pod through the in-cluster config and the agent's ServiceAccount, and the bpftrace command it
    prints fires there."""
    pods = kube.json("get", "pods", "-n", "kube-system", "-l", "k8s-app=cilium")
    seen = set()
    for pod in pods["items"]:
        node, name = pod["spec"]["nodeName"], pod["metadata"]["name"]
        agent = kube.agent_on(node)
        out = kube.in_agent(agent, "ctrace", "target", f"pod/{name}", "-n", "kube-system", "--func", "regenerate",
                       "-o", "json")  # fmt: skip
        assert out.returncode == 0, out.stderr
        (t,) = json.loads(out.stdout)["targets"]
        assert t["pod"]["name"] == name and t["pod"]["node"] == node
        assert len(t["nspid"]) == 2  # the node's PID namespace, then the pod's
        probe = t["probes"][0]
        # bpftrace runs until the timeout; an event whose first frame is the function is the proof.
        # Its frame may be a bare address: bpftrace names frames by the PID it sees, the host's,
        # which the agent's /proc (the node's PID namespace) does not have.
        fired = kube.in_agent(agent, "timeout", "-s", "INT", "15", *probe["argv"], timeout=60)
        first = rf"({re.escape(REGEN)}\+0|0x{probe['address']:x})"
        event = re.search(rf"^pid=\d+ regenerate\n\s+{first}$", fired.stdout, re.M)
        assert event, (fired.stdout[-2000:], fired.stderr[-2000:])
        seen.add(node)
    assert seen == kube.nodes()


def test_node_agent_runs_ctrace_and_bpftrace(kube: Kube) -> None:
    pods = k(kube, "target", "-l", "k8s-app=cilium", "-n", "kube-system", "--func", "regenerate")["targets"]
    target = pods[0]["pod"]
    agent = kube.agent_on(target["node"])
    version = kube.in_agent(agent, "bpftrace", "--version")
    assert version.returncode == 0 and version.stdout.startswith("bpftrace v"), version.stderr
    out = kube.in_agent(agent, "ctrace", "target", f"pod/{target['name']}", "-n", "kube-system",
                   "--func", "regenerate", "--run", "--duration", "3", timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"{REGEN}+0" in out.stdout


def test_agent_service_account_reads_pods_and_nothing_else(kube: Kube) -> None:
    """manifests/rbac.yaml for real: the agent's token lists pods and is refused a secret (403)."""
    agent = kube.agent_on(sorted(kube.nodes())[0])
    probe = (
        "import os, ssl, sys, urllib.error, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount/'\n"
        "ctx = ssl.create_default_context(cafile=sa + 'ca.crt')\n"
        "token = open(sa + 'token').read()\n"
        "host = 'https://' + os.environ['KUBERNETES_SERVICE_HOST'] + ':' + os.environ['KUBERNETES_SERVICE_PORT']\n"
        "for path in sys.argv[1:]:\n"
        "    req = urllib.request.Request(host + path, headers={'Authorization': 'Bearer ' + token})\n"
        "    try:\n"
        "        print(path, urllib.request.urlopen(req, context=ctx).status)\n"
        "    except urllib.error.HTTPError as e:\n"
        "        print(path, e.code)\n"
    )
    out = kube.in_agent(agent, "python3", "-c", probe, "/api/v1/pods", "/api/v1/namespaces/kube-system/pods/x",
                   "/api/v1/namespaces/kube-system/secrets", "/api/v1/namespaces/default/secrets/nope")  # fmt: skip
    assert out.returncode == 0, out.stderr
    codes = dict(line.rsplit(" ", 1) for line in out.stdout.splitlines())
    assert codes == {
        "/api/v1/pods": "200",
        "/api/v1/namespaces/kube-system/pods/x": "404",  # allowed, and there is no such pod
        "/api/v1/namespaces/kube-system/secrets": "403",
        "/api/v1/namespaces/default/secrets/nope": "403",
    }


def test_a_pod_that_is_not_there_is_one_line(kube: Kube) -> None:
    """A target that matches nothing is ctrace's one-line error, with the real server's answer."""
    res = ctrace("target", f"pod/none-{uuid.uuid4().hex[:6]}", "-n", "kube-system", "--func", "f", *kube.where)
    lines = res.err.strip().splitlines()
    assert res.code == 1 and len(lines) == 2 and lines[0].startswith("ctrace: error: ") and "not found" in lines[0]
