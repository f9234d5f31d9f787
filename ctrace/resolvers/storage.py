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

import json
import os

from ctrace.proc.monitors import CONMON, Tree
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers import oci
from ctrace.resolvers.base import Context, Monitors

if TYPE_CHECKING:
    from typing import Any

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


def record(bundle: str, ident: str) -> dict[str, Any]:
    """This container's entry in containers/storage's containers.json, with its metadata decoded; {} if none."""
    store = os.path.dirname(os.path.dirname(bundle.rstrip("/")))  # .../overlay-containers
    raw = oci.read_bytes(f"{store}/containers.json")
    if raw is None:
        return {}
    return parse_record(raw, ident, store)


def parse_record(raw: bytes, ident: str, where: str) -> dict[str, Any]:
    try:
        listed = json.loads(raw)
    except ValueError as err:
        raise oci.unknown_layout(where, f"containers.json is not JSON ({err})") from err
    if not isinstance(listed, list):
        raise oci.unknown_layout(where, "containers.json is not a list")
    for entry in listed:
        if isinstance(entry, dict) and entry.get("id") == ident:
            meta = entry.get("metadata")
            try:
                decoded = json.loads(meta) if isinstance(meta, str) and meta else {}
            except ValueError:
                decoded = {}
            return {**entry, "metadata": decoded if isinstance(decoded, dict) else {}}
    return {}


def matches(target: str, ident: str, names: tuple[str, ...]) -> bool | None:
    """True: exact; False: a prefix; None: no match (a short hex prefix is not an ID)."""
    if target == ident or target in names:
        return True
    long_enough = len(target) >= 4 or not all(c in "0123456789abcdef" for c in target)
    if (ident.startswith(target) and long_enough) or any(n.startswith(target) for n in names):
        return False
    return None
