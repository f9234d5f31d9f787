"""Which container, and which pod, a process is in, from its /proc/PID/cgroup paths.

Pure: the input is what ``procfs.parse_cgroup`` returns. The layouts seen in
the wild (cgroup v1 and v2, cgroupfs and systemd drivers):

- docker, cgroupfs driver: ``/docker/<64 hex>``
- docker, systemd driver: ``/system.slice/docker-<id>.scope``
- containerd CRI, systemd: ``/kubepods.slice/.../kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope``
- kubelet, cgroupfs driver: ``/kubepods/burstable/pod<uid>/<id>`` (the runtime is not in the path)
- CRI-O: ``crio-<id>.scope``; podman: ``libpod-<id>.scope``, or ``/libpod_parent/libpod-<id>`` with the
  cgroupfs manager (``*-conmon-<id>`` is the monitor)
- containerd outside kubelet: ``/<namespace>/<id>`` (``/k8s.io/<id>`` for CRI without kubelet's parent)
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
    (re.compile(rf"libpod-{_ID}(?:\.scope)?\Z"), "podman"),
)
_BARE = re.compile(rf"{_ID}\Z")
# kubepods-besteffort-pod<uid with _>.slice (systemd) or pod<uid> (cgroupfs)
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_POD = re.compile(rf"(?:\A|-)pod({_UID})(?:\.slice)?\Z")


class Placement(Record):
    """The innermost container a process is in; all None for a host process.

    The cgroup path gives the first three; the shim or conmon above the process
    (``procfs.placement``) gives the runtime's own state too: the containerd
    namespace, the OCI bundle and the containers its runtime itself runs in.
    """

    container_id: str | None = None
    runtime: str | None = None  # "docker", "containerd", "cri-o", "podman", or "cri" (kubelet, runtime unknown)
    pod_uid: str | None = None
    namespace: str = ""  # containerd's namespace ("k8s.io", "moby", ...)
    bundle: str | None = None  # the OCI bundle directory (config.json), as a path ctrace can open
    name: str = ""  # the name the runtime's monitor was given (conmon -n)
    outer: tuple[Placement, ...] = ()  # the containers this one's runtime runs in, outermost first (a kind node)


def _bare_runtime(parents: Sequence[str]) -> str:
    """The runtime of a bare 64-hex component, from the component above it."""
    if any(p == "kubepods" or p.startswith("kubepods") for p in parents):
        return "cri"
    if parents and parents[-1] == "k8s.io":
        return "containerd"  # containerd's default cgroup, /<namespace>/<id>, in CRI's namespace
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
    found: list[tuple[str, str]] = []
    pod: str | None = None
    for i, name in enumerate(parts):
        hit = _component(name, parts[:i])
        if hit:
            found.append(hit)
        m = _POD.search(name)
        if m:
            pod = m.group(1).replace("_", "-")
    if not found:
        return Placement(pod_uid=pod)
    outer = tuple(Placement(ident, runtime) for ident, runtime in found[:-1])
    return Placement(found[-1][0], found[-1][1], pod, outer=outer)


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
