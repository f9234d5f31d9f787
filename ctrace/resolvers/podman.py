"""podman (rootful), from conmon's arguments, the bundle's config.json and containers/storage's containers.json.

podman has a maintained Python client (podman-py), but it speaks to
``podman system service``, a daemon nodes rarely run; the state files are
always there and need no daemon.
"""

from __future__ import annotations

from ctrace.model import Container
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers import oci, storage
from ctrace.resolvers.base import Context, Hit, Monitors

if TYPE_CHECKING:
    from ctrace.proc.cgroups import Placement

NAME = "podman"
LIST = "podman ps"


def find(target: str, ctx: Context, monitors: Monitors) -> list[Hit]:
    out = []
    for where in storage.running(NAME, ctx, monitors):
        exact = storage.matches(target, where.container_id or "", (where.name,))
        if exact is None:
            continue
        hit = describe(where, ctx)
        if hit is not None:
            out.append(hit._replace(exact=exact))
    return out


def describe(where: Placement, ctx: Context) -> Hit | None:
    if where.bundle is None or where.container_id is None:
        return None
    spec = oci.read_spec(where.bundle)
    if spec is None:
        return None
    entry = storage.record(where.bundle, where.container_id)
    names = (entry.names if entry else ()) or (where.name,)
    found = Container(
        id=where.container_id,
        name=names[0],
        image=entry.image if entry else "",
        runtime=NAME,
        rootfs=oci.rootfs(where.bundle, spec),
    )
    return Hit(found, oci.pod(spec.annotations, oci.node_name()))
