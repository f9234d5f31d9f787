"""OCI bundles on disk, read-only: a container's ``config.json`` and what its annotations say.

Every runtime but docker is read from its own state files rather than asked
over an API: containerd keeps one bundle per task beside the shim
(``<state>/io.containerd.runtime.v2.task/<namespace>/<id>/``), podman and CRI-O
one ``userdata`` directory per container beside conmon. A bundle is read only
when a name or a process points at it.

The CRI keys, as the runtimes write them:

- containerd's CRI plugin (pkg/cri/annotations): ``io.kubernetes.cri.container-type``
  (``sandbox`` or ``container``), ``.container-name``, ``.sandbox-id``,
  ``.sandbox-name``, ``.sandbox-namespace``, ``.sandbox-uid``, ``.image-name`` (1.7+);
- CRI-O (pkg/annotations/internal.go): ``io.kubernetes.cri-o.ContainerType``,
  ``.ContainerName`` (``k8s_<container>_<pod>_<ns>_<uid>_<attempt>``), ``.SandboxName``,
  ``.ImageName``, ``.MountPoint``, and ``.Labels``, a JSON object holding the pod's labels with
  ``io.kubernetes.pod.name``, ``.namespace``, ``.uid`` and ``io.kubernetes.container.name``;
- the kubelet's labels, which ``ctr run --label`` and CRI-O's Labels carry:
  ``io.kubernetes.pod.name``, ``io.kubernetes.pod.namespace``, ``io.kubernetes.pod.uid``,
  ``io.kubernetes.container.name``.
"""

from __future__ import annotations

import json
import os

from ctrace.errors import EnvironmentProblem
from ctrace.model import Pod
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import Any

CRI = "io.kubernetes.cri."
CRIO = "io.kubernetes.cri-o."
KUBE_POD = "io.kubernetes.pod."
KUBE_CONTAINER = "io.kubernetes.container.name"
SANDBOX = "sandbox"
MAX_CONFIG = 4 << 20  # a config.json larger than this is not one a runtime wrote


class Spec(Record):
    """The parts of an OCI runtime spec ctrace reads."""

    annotations: dict[str, str]
    root: str  # root.path: absolute, or relative to the bundle
    hostname: str = ""


def read_bytes(path: str) -> bytes | None:
    """A state file's bytes; None when it is gone (the container exited) or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            if sum(map(len, chunks)) > MAX_CONFIG:
                return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def parse_spec(raw: bytes, where: str) -> Spec:
    """The spec in ``raw``; EnvironmentProblem naming ``where`` when it is not one."""
    try:
        data: Any = loads(raw)
    except ValueError as err:
        raise unknown_layout(where, f"config.json is not JSON ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("root", {}), dict):
        raise unknown_layout(where, "config.json is not an OCI runtime spec")
    notes = data.get("annotations") or {}
    if not isinstance(notes, dict):
        raise unknown_layout(where, "config.json's annotations are not an object")
    annotations = {str(k): v for k, v in notes.items() if isinstance(v, str)}  # map[string]string in the spec
    path, hostname = (data.get("root") or {}).get("path", ""), data.get("hostname", "")
    return Spec(annotations, path if isinstance(path, str) else "", hostname if isinstance(hostname, str) else "")


def loads(raw: bytes | str) -> Any:
    """json.loads, where nesting too deep for the decoder (a hostile file) is a ValueError too, not a RecursionError."""
    try:
        return json.loads(raw)
    except RecursionError as err:
        raise ValueError("nested too deeply") from err


def read_spec(bundle: str) -> Spec | None:
    """The spec of the bundle at ``bundle``; None when it is gone."""
    raw = read_bytes(f"{bundle}/config.json")
    return None if raw is None else parse_spec(raw, bundle)


def unknown_layout(where: str, why: str) -> EnvironmentProblem:
    return EnvironmentProblem(
        f"{where}: {why}: a runtime state layout ctrace does not know",
        "report the runtime and its version; --runtime host still traces the processes",
    )


def rootfs(bundle: str, spec: Spec) -> str | None:
    """The root filesystem as a host path: root.path, relative to the bundle unless absolute."""
    if not spec.root:
        return None
    path = spec.root if spec.root.startswith("/") else f"{bundle}/{spec.root}"
    return path if os.path.isdir(path) else None


def kube_labels(notes: dict[str, str]) -> dict[str, str]:
    """CRI-O's Labels annotation (a JSON object), else the annotations themselves."""
    raw = notes.get(CRIO + "Labels")
    if raw:
        try:
            labels = loads(raw)
        except ValueError:
            labels = None
        if isinstance(labels, dict):
            return {str(k): v for k, v in labels.items() if isinstance(v, str)}
    return notes


def is_sandbox(notes: dict[str, str]) -> bool:
    return SANDBOX in (notes.get(CRI + "container-type"), notes.get(CRIO + "ContainerType"))


def container_name(notes: dict[str, str]) -> str:
    """The Kubernetes container name, or "" when no CRI wrote this bundle."""
    labels = kube_labels(notes)
    return notes.get(CRI + "container-name") or labels.get(KUBE_CONTAINER, "")


def pod(notes: dict[str, str], node: str = "") -> Pod | None:
    """The pod a CRI runtime's annotations (or the kubelet's labels) place the container in."""
    labels = kube_labels(notes)
    name = notes.get(CRI + "sandbox-name") or labels.get(KUBE_POD + "name")
    if not name:
        return None
    namespace = notes.get(CRI + "sandbox-namespace") or labels.get(KUBE_POD + "namespace", "")
    uid = notes.get(CRI + "sandbox-uid") or labels.get(KUBE_POD + "uid", "")
    container = "POD" if is_sandbox(notes) else container_name(notes)
    return Pod(namespace, name, uid, container, node)


def image(notes: dict[str, str]) -> str:
    return notes.get(CRI + "image-name") or notes.get(CRIO + "ImageName") or notes.get(CRIO + "Image") or ""


def pod_labels(notes: dict[str, str]) -> dict[str, str]:
    """The pod's own labels, where the runtime keeps them in the bundle (CRI-O's sandbox Labels)."""
    labels = kube_labels(notes)
    return {} if labels is notes else {k: v for k, v in labels.items() if not k.startswith("io.kubernetes.")}


def split_kube_name(name: str) -> tuple[str, str, str, str] | None:
    """(container, pod, namespace, uid) from ``k8s_<container>_<pod>_<ns>_<uid>_<attempt>``.

    The kubelet's dockershim naming, which CRI-O keeps for conmon's -n and its
    storage names; Kubernetes names hold no underscore, so the split is exact."""
    parts = name.split("_")
    if len(parts) != 6 or parts[0] != "k8s":
        return None
    return parts[1], parts[2], parts[3], parts[4]


def node_name() -> str:
    return os.uname().nodename
