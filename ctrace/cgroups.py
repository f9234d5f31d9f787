"""Which container, and which pod, a process is in, from its /proc/PID/cgroup paths.

Pure: the input is what ``procfs.parse_cgroup`` returns. The layouts seen in
the wild (cgroup v1 and v2, cgroupfs and systemd drivers):

- docker, cgroupfs driver: ``/docker/<64 hex>``
- docker, systemd driver: ``/system.slice/docker-<id>.scope``
- containerd CRI, systemd: ``/kubepods.slice/.../kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope``
- kubelet, cgroupfs driver: ``/kubepods/burstable/pod<uid>/<id>`` (the runtime is not in the path)
- CRI-O: ``crio-<id>.scope``; podman: ``libpod-<id>.scope`` (``*-conmon-<id>`` is the monitor)
- kind: a kubelet inside a docker container, so ``/docker/<node id>/kubelet.slice/...`` or
  ``/docker/<node id>/kubelet/kubepods/...``: the innermost id is the pod's container.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ctrace.record import Record

_ID = r"([0-9a-f]{64})"
_SCOPES = (
    (re.compile(rf"docker-{_ID}\.scope\Z"), "docker"),
    (re.compile(rf"cri-containerd-{_ID}\.scope\Z"), "containerd"),
    (re.compile(rf"crio-{_ID}\.scope\Z"), "cri-o"),
    (re.compile(rf"libpod-{_ID}\.scope\Z"), "podman"),
)
_BARE = re.compile(rf"{_ID}\Z")
# kubepods-besteffort-pod<uid with _>.slice (systemd) or pod<uid> (cgroupfs)
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD = re.compile(rf"(?:\A|-)pod({_UID})(?:\.slice)?\Z")


class Placement(Record):
    """The innermost container a process is in; all None for a host process."""

    container_id: str | None = None
    runtime: str | None = None  # "docker", "containerd", "cri-o", "podman", or "cri" (kubelet, runtime unknown)
    pod_uid: str | None = None


def _bare_runtime(parents: Sequence[str]) -> str:
    """The runtime of a bare 64-hex component, from the component above it."""
    if any(p == "kubepods" or p.startswith("kubepods") for p in parents):
        return "cri"
    return "docker"


def _component(name: str, parents: Sequence[str]) -> tuple[str, str] | None:
    for rx, runtime in _SCOPES:
        m = rx.match(name)
        if m:
            return m.group(1), runtime
    m = _BARE.match(name)
    if m:
        return m.group(1), _bare_runtime(parents)
    return None


def parse_path(path: str) -> Placement:
    """The innermost container id (and pod uid) in one cgroup path."""
    parts = [p for p in path.split("/") if p]
    found: tuple[str, str] | None = None
    pod: str | None = None
    for i, name in enumerate(parts):
        hit = _component(name, parts[:i])
        if hit:
            found = hit
        m = _POD.search(name)
        if m:
            pod = m.group(1).replace("_", "-")
    if found is None:
        return Placement(pod_uid=pod)
    return Placement(found[0], found[1], pod)


def placement(paths: Sequence[str]) -> Placement:
    """The container of a process from all its cgroup lines.

    cgroup v1 lists one path per hierarchy and some may be ``/`` (a
    controller the runtime does not use), so the deepest path that names a
    container wins.
    """
    best = Placement()
    depth = -1
    for path in paths:
        found = parse_path(path)
        d = path.count("/")
        if found.container_id and d > depth:
            best, depth = found, d
    return best
