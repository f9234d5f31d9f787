"""CRI-O, from conmon's arguments and the bundle's config.json (its annotations name the pod).

CRI-O is not packaged in Debian: its parsing is tested on state files written
in its layout (tests/test_runtimes_parse.py), not on a running CRI-O.
"""

from __future__ import annotations

from ctrace.model import Container, Pod
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers import oci, storage
from ctrace.resolvers.base import Context, Hit, Monitors

if TYPE_CHECKING:
    from ctrace.proc.cgroups import Placement

NAME = "cri-o"
LIST = "crictl ps"


def find(target: str, ctx: Context, monitors: Monitors) -> list[Hit]:
    out = []
    for where in storage.running(NAME, ctx, monitors):
        split = oci.split_kube_name(where.name)
        names = (split[0],) if split else (where.name,)
        exact = storage.matches(target, where.container_id or "", names)
        by_pod = None
        if exact is None and split is not None:
            by_pod = storage.matches(target, "", (split[1],))
        if exact is None and by_pod is None:
            continue
        hit = describe(where, ctx)
        if hit is not None and not (by_pod is not None and hit.pod is not None and hit.pod.container == "POD"):
            out.append(hit._replace(exact=bool(exact if exact is not None else by_pod), by_pod=by_pod is not None))
    return out


def describe(where: Placement, ctx: Context) -> Hit | None:
    if where.bundle is None or where.container_id is None:
        return None
    spec = oci.read_spec(where.bundle)
    if spec is None:
        return None
    notes = spec.annotations
    split = oci.split_kube_name(notes.get(oci.CRIO + "ContainerName", "") or where.name)
    pod = oci.pod(notes, oci.node_name())
    if pod is None and split is not None:
        pod = Pod(split[2], split[1], split[3], split[0], oci.node_name())
    mount = notes.get(oci.CRIO + "MountPoint")
    found = Container(
        id=where.container_id,
        name=oci.container_name(notes) or (split[0] if split else where.name),
        image=oci.image(notes),
        runtime=NAME,
        rootfs=mount if mount else oci.rootfs(where.bundle, spec),
    )
    return Hit(found, pod, labels=tuple(sorted(oci.pod_labels(notes).items())))
