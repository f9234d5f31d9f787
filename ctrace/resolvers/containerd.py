"""containerd, in any namespace (``k8s.io`` for CRI, ``moby`` for docker's, the user's own), from its task bundles.

There is no maintained Python client for containerd's gRPC API, and ``ctr`` is
a subprocess: so ctrace reads the state the runc shim keeps, read-only. Each
running task has a bundle ``<state>/io.containerd.runtime.v2.task/<namespace>/<id>/``
holding ``config.json`` (the OCI spec, with the CRI plugin's annotations),
``init.pid`` and ``rootfs``, where the snapshot is mounted. ``<state>`` is
``/run/containerd`` for a standalone containerd and
``/run/docker/containerd/daemon`` for docker's; any other (a containerd given
``--state``, one inside a kind node) is found through its shims, which run in
their bundle (containerd's shim Command sets the working directory).

A container's name here is its ID (``ctr run IMAGE ID``); a CRI container is
also named by its container name and its pod's name from the annotations. The
image and the labels (a CRI sandbox's are its pod's) are in containerd's
metadata database, read with ``bolt.py``; its root is where the task's rootfs
overlay has its layers (the mount's ``upperdir``).
"""

from __future__ import annotations

import os
import re
import struct

from ctrace.model import Container
from ctrace.proc.monitors import SHIM, Tree
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers import bolt, oci
from ctrace.resolvers.base import Context, Hit, Monitors

if TYPE_CHECKING:
    from ctrace.proc.cgroups import Placement

NAME = "containerd"
LIST = "ctr -n NAMESPACE tasks ls"
TASKS = "io.containerd.runtime.v2.task"
ROOTS = (f"/run/containerd/{TASKS}", f"/run/docker/containerd/daemon/{TASKS}")
MIN_ID_PREFIX = 4  # as docker: shorter hex is a process name far more often than an ID


def roots(ctx: Context, monitors: Monitors) -> list[str]:
    """Every task directory on this host: the usual two, and those the running shims are in."""
    tree = Tree.of(ctx.proc_root)
    found = [r for r in ROOTS if os.path.isdir(r)]
    for shim in monitors.shims:
        where = tree.level(shim, SHIM, [])
        if where is None or where.bundle is None or where.runtime == "docker":
            continue
        root = os.path.dirname(os.path.dirname(where.bundle))
        if not any(_same(root, r) for r in found):
            found.append(root)
    return found


def _same(a: str, b: str) -> bool:
    try:
        return a == b or os.path.samefile(a, b)
    except OSError:
        return False


def _prefix_ok(target: str) -> bool:
    return len(target) >= MIN_ID_PREFIX or not all(c in "0123456789abcdef" for c in target)


def find(target: str, ctx: Context, monitors: Monitors) -> list[Hit]:
    want = target.encode("utf-8", "surrogateescape")
    out = []
    for root in roots(ctx, monitors):
        for namespace in _list(root):
            for ident in _list(f"{root}/{namespace}"):
                bundle = f"{root}/{namespace}/{ident}"
                if ident == target or (ident.startswith(target) and _prefix_ok(target)):
                    hit = _hit(bundle, namespace, ident, target)
                elif namespace != "moby":
                    # Names from CRI annotations: parse only the bundles that mention the target.
                    raw = oci.read_bytes(f"{bundle}/config.json")
                    hit = _hit(bundle, namespace, ident, target, raw) if raw and want in raw else None
                else:
                    hit = None
                if hit is not None:
                    out.append(hit)
    return out


def _list(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _hit(bundle: str, namespace: str, ident: str, target: str, raw: bytes | None = None) -> Hit | None:
    if raw is None:
        raw = oci.read_bytes(f"{bundle}/config.json")
    if raw is None:
        return None  # the task ended while we looked
    spec = oci.parse_spec(raw, bundle)
    found = container(bundle, namespace, ident, spec)
    pod = oci.pod(spec.annotations, oci.node_name())
    hit = Hit(found, pod, group=spec.annotations.get(oci.CRI + "sandbox-id", ""))
    if oci.is_sandbox(spec.annotations):  # the CRI plugin gives a sandbox its pod's labels
        labels = metadata(bundle, namespace, ident)[1]
        own = sorted((k, v) for k, v in labels.items() if not k.startswith(("io.kubernetes.", "io.cri-containerd.")))
        hit = hit._replace(labels=tuple(own))
    if ident == target or found.name == target:
        return hit
    if pod is not None and pod.name == target and pod.container != "POD":
        return hit._replace(by_pod=True)
    if ident.startswith(target) or found.name.startswith(target):
        return hit._replace(exact=False)
    if pod is not None and pod.name.startswith(target) and pod.container != "POD":
        return hit._replace(exact=False, by_pod=True)
    return None


_VIEW = re.compile(r"(/.+?/\d+)/root(/.*)\Z")
_MOUNTS: dict[str, list[tuple[str, str]]] = {}  # mountinfo path -> (mount point, options)
_DBS: dict[str, bolt.Bolt | None] = {}


def metadata(bundle: str, namespace: str, ident: str) -> tuple[str, dict[str, str]]:
    """(image, labels) of a container from containerd's metadata database; ("", {}) when unknown."""
    m = _VIEW.match(bundle)  # PROC/PID/root...: a runtime in another mount namespace
    prefix, inside = (m.group(1) + "/root", m.group(2)) if m else ("", bundle)
    info = f"{m.group(1)}/mountinfo" if m else "/proc/self/mountinfo"
    root = _snapshot_root(info, f"{inside}/rootfs")
    if root is None:
        return "", {}
    path = f"{prefix}{root}/io.containerd.metadata.v1.bolt/meta.db"
    if path not in _DBS:
        _DBS[path] = bolt.open_bolt(path)
    db = _DBS[path]
    if db is None:
        return "", {}
    try:
        keys = db.get(b"v1", namespace.encode(), b"containers", ident.encode())
        labels = db.get(b"v1", namespace.encode(), b"containers", ident.encode(), b"labels")
    except (ValueError, IndexError, struct.error):  # a page torn by a write: what the bundle says stands
        return "", {}
    return _text(keys.get(b"image")), {_text(k): _text(v) for k, v in labels.items()}


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def _snapshot_root(mountinfo: str, mount_point: str) -> str | None:
    if mountinfo not in _MOUNTS:
        raw = oci.read_bytes(mountinfo) or b""
        rows = []
        for line in raw.decode("utf-8", "replace").splitlines():
            fields = line.split(" ")
            if len(fields) > 4 and " - " in line:
                rows.append((fields[4], line.rpartition(" ")[2]))
        _MOUNTS[mountinfo] = rows
    for point, options in _MOUNTS[mountinfo]:
        if point == mount_point:
            for opt in options.split(","):
                key, _, value = opt.partition("=")
                if key in ("upperdir", "lowerdir") and "/io.containerd.snapshotter." in value:
                    return value.split(":")[0].partition("/io.containerd.snapshotter.")[0]
    return None


def container(bundle: str, namespace: str, ident: str, spec: oci.Spec) -> Container:
    name = oci.container_name(spec.annotations) or ident
    image = oci.image(spec.annotations) or metadata(bundle, namespace, ident)[0]
    return Container(
        id=ident,
        name=name,
        image=image,
        runtime=NAME,
        init_pid=_init_pid(bundle),
        namespace=namespace,
        rootfs=oci.rootfs(bundle, spec),
    )


def _init_pid(bundle: str) -> int | None:
    """init.pid as runc wrote it: a PID of the shim's PID namespace (the host's unless nested)."""
    raw = oci.read_bytes(f"{bundle}/init.pid")
    text = raw.decode("ascii", "replace").strip() if raw else ""
    return int(text) if text.isdigit() else None


def describe(where: Placement, ctx: Context) -> Hit | None:
    if where.bundle is None or where.container_id is None:
        return None
    spec = oci.read_spec(where.bundle)
    if spec is None:
        return None
    found = container(where.bundle, where.namespace, where.container_id, spec)
    if where.bundle.startswith(f"{ctx.proc_root}/"):
        found = found._replace(init_pid=None)  # a nested runtime's PID, not one of this host's
    return Hit(found, oci.pod(spec.annotations, oci.node_name()))
