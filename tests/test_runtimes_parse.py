"""Runtime state read from files: cgroup layouts, conmon's arguments, OCI bundles, and CRI-O.

CRI-O is not packaged in Debian, so it is tested here on state written in its
layout (per cri-o's pkg/annotations/internal.go and its conmon arguments), under
a proc root made of files (``--proc-root``): a conmon with a bundle, a container
process below it, a pod's sandbox beside it. No CRI-O daemon runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ctrace.errors import EnvironmentProblem, UsageError
from ctrace.model import Container, Pod
from ctrace.proc import cgroups, monitors, placement, procfs
from ctrace.resolvers import containers, oci, runtimes
from ctrace.resolvers.base import Context, Hit
from tests.conftest import ctrace
from tests.runtime_report import record

A = "e09f75739d59aee280f65d972865a239c10e37d72266d17f47637c818f1d7323"
S = "5f0c1d2e3f4a5b6c7d8e9f00112233445566778899aabbccddeeff0011223344"
UID = "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
ROW = "CRI-O from captures"


def test_cgroup_layouts_of_plain_containerd_and_podman_cgroupfs() -> None:
    got = cgroups.placement(procfs.parse_cgroup(f"8:pids:/k8s.io/{A}\n"))
    assert (got.container_id, got.runtime) == (A, "containerd")
    got = cgroups.placement(procfs.parse_cgroup(f"8:pids:/libpod_parent/libpod-{A}\n"))
    assert (got.container_id, got.runtime) == (A, "podman")
    nested = cgroups.placement(procfs.parse_cgroup(f"4:pids:/docker/{S}/kubelet/kubepods/besteffort/pod{UID}/{A}\n"))
    assert nested.container_id == A and [o.container_id for o in nested.outer] == [S]


def test_stat_with_a_hostile_comm() -> None:
    assert monitors.parse_stat(b"42 (a) b (c) S 7 42 42 0 -1") == (7, "a) b (c")


# conmon's arguments as podman 4.3 started it on this machine (trimmed), and as CRI-O starts it.
PODMAN_CONMON = [
    "/usr/bin/conmon", "--api-version", "1", "-c", A, "-u", A, "-r", "/usr/bin/runc",
    "-b", f"/var/lib/containers/storage/overlay-containers/{A}/userdata",
    "-p", f"/run/containers/storage/overlay-containers/{A}/userdata/pidfile", "-n", "web",
    "--exit-dir", "/run/libpod/exits", "--full-attach",
]  # fmt: skip
CRIO_CONMON = [
    "/usr/bin/conmon", "-b", "USERDATA", "-c", A, "--exit-dir", "/var/run/crio/exits",
    "-l", f"/var/log/pods/shop_web-7f_{UID}/agent/0.log", "--log-level", "info",
    "-n", f"k8s_agent_web-7f_shop_{UID}_0",
    "-P", "/run/containers/storage/overlay-containers/x/userdata/conmon-pidfile",
    "-p", "/run/containers/storage/overlay-containers/x/userdata/pidfile", "-r", "/usr/bin/runc", "-u", A,
]  # fmt: skip


def test_conmon_arguments() -> None:
    assert monitors.conmon_level(PODMAN_CONMON, "") == (
        "podman", "", A, f"/var/lib/containers/storage/overlay-containers/{A}/userdata", "web",
    )  # fmt: skip
    runtime, _, ident, bundle, name = monitors.conmon_level(CRIO_CONMON, "/proc/9/root") or ("", "", "", "", "")
    assert (runtime, ident, bundle, name) == ("cri-o", A, "/proc/9/root" + "USERDATA", f"k8s_agent_web-7f_shop_{UID}_0")
    assert monitors.conmon_level(["/usr/bin/conmon", "--version"], "") is None


def test_cri_annotations_name_the_pod() -> None:
    containerd = {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "agent",
        "io.kubernetes.cri.sandbox-name": "web-7f",
        "io.kubernetes.cri.sandbox-namespace": "shop",
        "io.kubernetes.cri.sandbox-uid": UID,
    }
    assert oci.pod(containerd, "n1") == Pod("shop", "web-7f", UID, "agent", "n1")
    sandbox = {**containerd, "io.kubernetes.cri.container-type": "sandbox"}
    assert oci.pod(sandbox) == Pod("shop", "web-7f", UID, "POD", "")
    assert oci.pod({}) is None
    assert oci.split_kube_name(f"k8s_agent_web-7f_shop_{UID}_0") == ("agent", "web-7f", "shop", UID)
    assert oci.split_kube_name("web") is None


def test_unknown_layouts_are_one_clear_error() -> None:
    for raw, why in (
        (b"{not json", "not JSON"),
        (b"[1]", "not an OCI runtime spec"),
        (b'{"annotations": 3}', "annotations"),
    ):
        with pytest.raises(EnvironmentProblem, match=why) as err:
            oci.parse_spec(raw, "/run/x/bundle")
        assert "a runtime state layout ctrace does not know" in err.value.message


def hit(runtime: str, name: str, exact: bool = True, by_pod: bool = False) -> Hit:
    return Hit(Container(f"{runtime}-{name}-{'x' * 12}", name, "", runtime), None, exact, by_pod)


def test_precedence() -> None:
    prefixes = [hit("containerd", "orders-1", False), hit("podman", "orders-2", False)]
    assert containers.pick("orders", prefixes, process_named=True, take_all=False) == []  # the process wins
    with pytest.raises(UsageError, match="matches 2 containers"):
        containers.pick("orders", prefixes, process_named=False, take_all=False)
    assert containers.pick("orders", prefixes, process_named=False, take_all=True) == prefixes
    exact = hit("docker", "orders")
    assert containers.pick("orders", [exact, *prefixes], process_named=True, take_all=False) == [exact]
    twins = [hit("docker", "web"), hit("podman", "web")]
    with pytest.raises(UsageError, match="containers of 2 runtimes") as err:
        containers.pick("web", twins, process_named=False, take_all=False)
    assert "docker container web" in err.value.message and "podman container web" in err.value.message
    assert err.value.hint == "choose one with --runtime docker or --runtime podman"
    pod = hit("cri-o", "agent", by_pod=True)
    assert containers.pick("web-7f", [pod, *prefixes], process_named=False, take_all=False) == [pod]


def crio_spec(kind: str, name: str, mount: str) -> dict[str, object]:
    """config.json as CRI-O writes it (the keys of pkg/annotations/internal.go)."""
    labels = {
        "io.kubernetes.container.name": name,
        "io.kubernetes.pod.name": "web-7f",
        "io.kubernetes.pod.namespace": "shop",
        "io.kubernetes.pod.uid": UID,
    }
    if kind == "sandbox":
        labels = {**labels, "app": "web", "tier": "api"}
        del labels["io.kubernetes.container.name"]
    notes = {
        "io.kubernetes.cri-o.ContainerType": kind,
        "io.kubernetes.cri-o.ContainerName": f"k8s_{name}_web-7f_shop_{UID}_0",
        "io.kubernetes.cri-o.SandboxName": f"k8s_web-7f_shop_{UID}_0",
        "io.kubernetes.cri-o.ImageName": "quay.io/cilium/cilium:v1.15.0",
        "io.kubernetes.cri-o.Labels": json.dumps(labels),
        "io.kubernetes.cri-o.MountPoint": mount,
        "io.kubernetes.pod.name": "web-7f",
        "io.kubernetes.pod.namespace": "shop",
    }
    return {"ociVersion": "1.0.2-dev", "root": {"path": mount}, "annotations": notes}


def fake_process(proc: Path, pid: int, ppid: int, comm: str, argv: list[str], cgroup: str, exe: str) -> None:
    d = proc / str(pid)
    d.mkdir()
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560\n")
    (d / "comm").write_text(comm + "\n")
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "cgroup").write_text(cgroup)
    nspid = f"{pid}\t1" if comm not in ("conmon", "init") else str(pid)
    (d / "status").write_text(f"Name:\t{comm}\nState:\tS (sleeping)\nTgid:\t{pid}\nPPid:\t{ppid}\nNSpid:\t{nspid}\n")
    (d / "exe").symlink_to(exe)
    (d / "root").symlink_to("/")


@pytest.fixture
def crio_node(tmp_path: Path) -> Path:
    """A node running CRI-O, as files: conmon + agent (ID A), conmon + the pod's pause (ID S)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    fake_process(proc, 1, 0, "init", ["/sbin/init"], "0::/init.scope\n", "/sbin/init")
    run = tmp_path / "run" / "containers" / "storage" / "overlay-containers"
    slice_ = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice"
    for ident, kind, name, pid in ((A, "container", "agent", 100), (S, "sandbox", "POD", 200)):
        userdata = run / ident / "userdata"
        userdata.mkdir(parents=True)
        mount = f"/var/lib/containers/storage/overlay/{ident[:8]}/merged"
        (userdata / "config.json").write_text(json.dumps(crio_spec(kind, name, mount)))
        argv = [a.replace("USERDATA", str(userdata)) for a in CRIO_CONMON]
        argv = [ident if a == A else a for a in argv]
        argv[argv.index("-n") + 1] = f"k8s_{name}_web-7f_shop_{UID}_0"
        fake_process(proc, pid, 1, "conmon", argv, f"0::{slice_}/crio-conmon-{ident}.scope\n", "/usr/bin/conmon")
        comm = "cilium-agent" if kind == "container" else "pause"
        cg = f"0::{slice_}/crio-{ident}.scope\n"
        fake_process(proc, pid + 1, pid, comm, [f"/usr/bin/{comm}"], cg, f"/usr/bin/{comm}")
    (proc / "self").symlink_to("1")
    return proc


def test_crio_placement_and_identity(crio_node: Path) -> None:
    ctx = Context(proc_root=str(crio_node))
    where = placement.placement(101, str(crio_node))
    assert (where.runtime, where.container_id, where.pod_uid) == ("cri-o", A, UID)
    (proc,) = runtimes.annotate([containers_process(ctx, 101)], ctx)
    c, pod = proc.container, proc.pod
    assert c is not None and pod is not None
    assert (c.runtime, c.id, c.name, c.image) == ("cri-o", A, "agent", "quay.io/cilium/cilium:v1.15.0")
    assert c.rootfs == f"/var/lib/containers/storage/overlay/{A[:8]}/merged"
    assert (pod.namespace, pod.name, pod.uid, pod.container) == ("shop", "web-7f", UID, "agent")
    record(ROW, "by PID", "yes (conmon above the process; parser on files)")
    record(ROW, "identity", "runtime, name, ID, image (annotations)")
    record(ROW, "pod", "namespace, name, UID, container (Labels annotation)")
    record(ROW, "root filesystem path", "MountPoint annotation (not opened: no CRI-O here)")
    record(ROW, "fired from the host", "n/a: no CRI-O on Debian")
    record(ROW, "fired inside the node", "n/a: no CRI-O on Debian")


def containers_process(ctx: Context, pid: int) -> object:
    from ctrace.resolvers import host

    return host.process(pid, ctx)


def test_crio_by_name_and_pod_name(crio_node: Path) -> None:
    ctx = Context(proc_root=str(crio_node), self_pid=os.getpid())
    for name in ("agent", "web-7f", A, A[:12]):
        (proc,) = containers.resolve(name, ctx)
        assert proc.pid == 101 and proc.container is not None and proc.container.id == A, name
    (only,) = containers.resolve("agent", ctx, only="cri-o")
    assert only.pid == 101
    record(ROW, "by name", "yes: container name, pod name, ID, ID prefix (parser on files)")


def test_crio_ps_through_the_cli(crio_node: Path) -> None:
    res = ctrace("--proc-root", str(crio_node), "ps", "-o", "json")
    assert res.code == 0, res.err
    by_pid = {p["pid"]: p for p in res.json()["processes"]}
    assert by_pid[101]["container"]["name"] == "agent" and by_pid[101]["pod"]["name"] == "web-7f"
    assert by_pid[201]["pod"]["container"] == "POD"
    assert by_pid[100]["container"] is None  # conmon is not in the container it watches
    res = ctrace("--proc-root", str(crio_node), "ps", "--container", "web-7f")
    assert res.code == 0, res.err
    rows = res.out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["101"] and "cri-o" in rows[0] and "shop/web-7f" in rows[0]


def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config


def test_crio_pods_without_an_api_server(crio_node: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ctrace.resolvers import kubernetes
    from ctrace.resolvers.base import K8sOptions

    no_cluster(monkeypatch, tmp_path)
    ctx = Context(proc_root=str(crio_node), self_pid=os.getpid())
    for opts in (
        K8sOptions(namespace="shop"),
        K8sOptions(),
        K8sOptions(selector="app=web,tier!=db"),
        K8sOptions(selector="app", container="agent"),
    ):
        target = "" if opts.selector else "pod/web-7f"
        found = kubernetes.resolve(target, ctx._replace(k8s=opts))
        assert [p.pid for p in found] == [101], opts
    with pytest.raises(Exception, match="no pod 'web-7f'"):
        kubernetes.resolve("pod/web-7f", ctx._replace(k8s=K8sOptions(namespace="other")))
    with pytest.raises(Exception, match="no pods matching"):
        kubernetes.resolve("", ctx._replace(k8s=K8sOptions(selector="app=db")))
    with pytest.raises(UsageError, match="needs the API server"):
        kubernetes.resolve("", ctx._replace(k8s=K8sOptions(selector="app in (web)")))
    with pytest.raises(EnvironmentProblem, match="needs the API server"):
        kubernetes.resolve("deploy/web", ctx)
    with pytest.raises(UsageError, match=r"not in the pod \(it has agent\)"):
        kubernetes.resolve("pod/web-7f", ctx._replace(k8s=K8sOptions(container="sidecar")))


def test_a_file_that_is_not_bbolt_is_no_database(tmp_path: Path) -> None:
    from ctrace.resolvers import bolt

    for data in (b"", b"x" * 10000, (0xED0CDAED).to_bytes(4, "little") * 2048):
        (tmp_path / "meta.db").write_bytes(data)
        assert bolt.open_bolt(str(tmp_path / "meta.db")) is None
    assert bolt.open_bolt(str(tmp_path / "missing.db")) is None
