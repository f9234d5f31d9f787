"""Container and pod from /proc/PID/cgroup text, for every layout ctrace knows."""

from __future__ import annotations

import pytest

from ctrace.proc.cgroups import Placement, placement
from ctrace.proc.procfs import parse_cgroup

A = "e09f75739d59aee280f65d972865a239c10e37d72266d17f47637c818f1d7323"
B = "872ae883e81e57f6a5989929e3d61229b95156b5490e1e71fbf42e6c34f1f5f4"
UID = "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"
UID_ = UID.replace("-", "_")

# Captured on docker 20.10, cgroup v1, cgroupfs driver (this machine).
DOCKER_V1 = f"""12:cpuset:/docker/{A}
9:name=systemd:/docker/{A}
8:pids:/docker/{A}
1:net_cls,net_prio:/
0::/
"""
DOCKER_V2_SYSTEMD = f"0::/system.slice/docker-{A}.scope\n"
CRI_CONTAINERD_V2 = (
    f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{A}.scope\n"
)
KUBELET_CGROUPFS_V1 = f"11:memory:/kubepods/burstable/pod{UID}/{A}\n1:name=systemd:/kubepods/burstable/pod{UID}/{A}\n"
CRIO_V2 = f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-{A}.scope\n"
CRIO_CONMON_V2 = f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{A}.scope\n"
PODMAN_V2 = f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{A}.scope/container\n"
# kind: a kubelet inside the docker container of the node.
KIND_V2 = (
    f"0::/system.slice/docker-{B}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
    f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{A}.scope\n"
)
KIND_V1 = f"4:pids:/docker/{B}/kubelet/kubepods/besteffort/pod{UID}/{A}\n3:cpu:/docker/{B}\n"
HOST_V1 = "12:cpuset:/\n9:name=systemd:/init.scope\n0::/init.scope\n"
HOST_USER_V2 = "0::/user.slice/user-1000.slice/session-3.scope\n"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (DOCKER_V1, Placement(A, "docker")),
        (DOCKER_V2_SYSTEMD, Placement(A, "docker")),
        (CRI_CONTAINERD_V2, Placement(A, "containerd", UID)),
        (KUBELET_CGROUPFS_V1, Placement(A, "cri", UID)),
        (CRIO_V2, Placement(A, "cri-o", UID)),
        (PODMAN_V2, Placement(A, "podman")),
        (KIND_V2, Placement(A, "containerd", UID)),
        (KIND_V1, Placement(A, "cri", UID)),
        (HOST_V1, Placement()),
        (HOST_USER_V2, Placement()),
        # the monitor beside a CRI-O container is not in it
        (CRIO_CONMON_V2, Placement(None, None, UID)),
        ("", Placement()),
    ],
    ids=[
        "docker-v1",
        "docker-v2-systemd",
        "containerd-v2",
        "kubelet-cgroupfs-v1",
        "crio-v2",
        "podman-v2",
        "kind-v2",
        "kind-v1",
        "host-v1",
        "host-v2",
        "crio-conmon",
        "empty",
    ],
)
def test_placement(text: str, want: Placement) -> None:
    got = placement(parse_cgroup(text))
    assert got.container_id == want.container_id and got.runtime == want.runtime
    if want.container_id:
        assert got.pod_uid == want.pod_uid


def test_innermost_id_wins_over_the_node_container() -> None:
    got = placement(parse_cgroup(KIND_V1))
    assert got.container_id == A != B


def test_not_an_id_is_not_a_container() -> None:
    # 63 hex digits, uppercase, or a scope of an unknown runtime
    short = A[:-1]
    for text in (f"0::/docker/{short}\n", f"0::/docker/{A.upper()}\n", f"0::/system.slice/foo-{A}.scope\n"):
        assert placement(parse_cgroup(text)).container_id is None, text
