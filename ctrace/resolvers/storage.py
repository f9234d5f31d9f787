"""What podman and CRI-O share: conmon above each container, and containers/storage on disk.

Both start one ``conmon`` per container with ``-c ID -b BUNDLE -n NAME`` (and
``--exit-dir``: podman's under /run/libpod, CRI-O's under /var/run/crio), so
the running containers and their names come from conmon's arguments, and the
rest from the bundle's ``config.json``. podman's bundle is
``<graphroot>/overlay-containers/<id>/userdata``, beside containers/storage's
``containers.json`` (names, image, layer); CRI-O's is the same path under the
run root (/run/containers/storage).
"""

from __future__ import annotations

import os

from ctrace.proc.monitors import CONMON, Tree
from ctrace.record import TYPE_CHECKING, Record
from ctrace.resolvers import oci
from ctrace.resolvers.base import Context, Monitors

if TYPE_CHECKING:
    from ctrace.proc.cgroups import Placement


def running(runtime: str, ctx: Context, monitors: Monitors) -> list[Placement]:
    """The containers conmon monitors for ``runtime`` ("podman" or "cri-o")."""
    tree = Tree.of(ctx.proc_root)
    out = []
    for pid in monitors.conmons:
        where = tree.level(pid, CONMON, [])
        if where is not None and where.runtime == runtime:
            out.append(where)
    return out


class Stored(Record):
    """What ctrace reads of a container's entry in containers/storage's containers.json."""

    names: tuple[str, ...]
    image: str  # the metadata's image-name (podman writes it), or ""


def record(bundle: str, ident: str) -> Stored | None:
    """This container's entry in containers/storage's containers.json; None if none."""
    store = os.path.dirname(os.path.dirname(bundle.rstrip("/")))  # .../overlay-containers
    raw = oci.read_bytes(f"{store}/containers.json")
    if raw is None:
        return None
    return parse_record(raw, ident, store)


def parse_record(raw: bytes, ident: str, where: str) -> Stored | None:
    try:
        listed = oci.loads(raw)
    except ValueError as err:
        raise oci.unknown_layout(where, f"containers.json is not JSON ({err})") from err
    if not isinstance(listed, list):
        raise oci.unknown_layout(where, "containers.json is not a list")
    for entry in listed:
        if isinstance(entry, dict) and entry.get("id") == ident:
            names = entry.get("names")
            meta = entry.get("metadata")
            try:
                decoded = oci.loads(meta) if isinstance(meta, str) and meta else {}
            except ValueError:
                decoded = {}
            image = decoded.get("image-name") if isinstance(decoded, dict) else None
            return Stored(
                tuple(n for n in names if isinstance(n, str)) if isinstance(names, list) else (),
                image if isinstance(image, str) else "",
            )
    return None


def matches(target: str, ident: str, names: tuple[str, ...]) -> bool | None:
    """True: exact; False: a prefix; None: no match (a short hex prefix is not an ID)."""
    if target == ident or target in names:
        return True
    long_enough = len(target) >= 4 or not all(c in "0123456789abcdef" for c in target)
    if (ident.startswith(target) and long_enough) or any(n.startswith(target) for n in names):
        return False
    return None
