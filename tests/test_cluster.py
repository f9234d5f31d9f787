"""hack/cluster.sh: a real Kubernetes (1.20, from Debian's source) with two worker nodes as kind
makes them, on this machine and without a registry. The session's cluster is shared
(tests/conftest.py's ``cluster``); the test that takes it down runs last."""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.cluster import NODES, PREFIX, Cluster, down, leftovers, local_image, running
from tests.conftest import Built, run

pytestmark = pytest.mark.cluster

SESSION = uuid.uuid4().hex[:8]


def nspids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(x) for x in line.split()[1:]]
    return []


def test_two_ready_workers_with_their_own_identity(cluster: Cluster) -> None:
    nodes = cluster.json("get", "nodes")["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == sorted(NODES)
    host_id = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
    ids = set()
    for n in nodes:
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", n["status"]["conditions"]
        info = n["status"]["nodeInfo"]
        assert info["kubeletVersion"] == "v1.20.2"
        assert info["containerRuntimeVersion"].startswith("containerd://")
        ids.add(info["machineID"])
        (ip,) = [a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
        assert re.fullmatch(r"10\.250\.\d+\.2", ip)
    assert len(ids) == 2 and host_id not in ids
    # The host's docker is untouched while the cluster runs: its bridge, and a container on it.
    assert subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
    docker_runs()


def docker_runs() -> None:
    image = local_image(f"ctrace-test/busybox:{SESSION}", {"/bin/busybox": Path("/bin/busybox")}, ["/bin/busybox"])
    try:
        out = run(["docker", "run", "--rm", image, "echo", "docker-ok"]).stdout
        assert out.strip() == "docker-ok"
    finally:
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True)


def test_up_again_is_harmless(cluster: Cluster) -> None:
    from tests.cluster import recorded_pids, sh

    before = recorded_pids()
    res = sh("up", timeout=300)
    assert res.returncode == 0, res.stderr
    assert recorded_pids() == before and all(running(p) for p in before.values())


def test_unprivileged_user_is_refused(cluster: Cluster) -> None:
    res = cluster.kubectl("get", "pods", "-A", user=True, check=False)
    assert res.returncode != 0 and "forbidden" in res.stderr.lower()
    assert 'User "ctrace-user"' in res.stderr


def test_loaded_image_runs_one_pod_per_node(cluster: Cluster, built: Built) -> None:
    image = local_image(f"ctrace-test/hello:{SESSION}", {"/hello": built["hello"]}, ["/hello"])
    cluster.load(image)
    name = f"hello-{SESSION}"
    cluster.apply(f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - {{labelSelector: {{matchLabels: {{app: {name}}}}}, topologyKey: kubernetes.io/hostname}}
      containers:
        - {{name: hello, image: {image}, imagePullPolicy: Never}}
""")
    try:
        cluster.rollout(f"deploy/{name}", "default")
        pods = cluster.json("get", "pods", "-n", "default", "-l", f"app={name}")["items"]
        assert sorted(p["spec"]["nodeName"] for p in pods) == sorted(NODES)
        for p in pods:
            logs = cluster.kubectl("logs", "-n", "default", p["metadata"]["name"], "--tail", "1").stdout
            assert logs.strip() == "Hello, world!"
        # Each replica's process, seen from the host: three PID namespaces deep, in its node's cgroup.
        deep = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() != "hello":
                    continue
                cgroup = (entry / "cgroup").read_text()
            except OSError:
                continue
            for p in pods:
                if p["metadata"]["uid"].replace("-", "_") in cgroup or p["metadata"]["uid"] in cgroup:
                    deep[p["spec"]["nodeName"]] = nspids(int(entry.name))
                    assert f"/{PREFIX}/{p['spec']['nodeName']}/" in cgroup
        assert sorted(deep) == sorted(NODES)
        assert all(len(ns) == 3 and ns[-1] == 1 for ns in deep.values()), deep
    finally:
        cluster.kubectl("delete", "deploy", name, "-n", "default", "--wait=false", check=False)


@pytest.mark.cluster_down
def test_down_leaves_nothing_and_docker_works(cluster: Cluster, built: Built) -> None:
    res, seconds, pids = down()
    assert res.returncode == 0, res.stderr
    print(f"hack/cluster.sh up took {cluster.up_seconds:.1f} s, down {seconds:.1f} s")
    assert pids and not any(running(p) for p in pids)
    assert leftovers(pids) == {}
    # The host's docker: its bridge is there and a container runs.
    assert subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0
    docker_runs()
