"""Docker containers (a runtime of ``runtimes.py``): a container name, a full or short ID, a name prefix.

Which container a process is in comes from /proc (``procfs.placement``); the
daemon is asked only for what /proc cannot tell: names, image, the init PID
and MergedDir.

The local socket is spoken to directly (``engine.py``); only a daemon over
TCP, TLS or ssh needs the ``docker`` package, which only this module imports,
inside the functions that use it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from ctrace.errors import EnvironmentProblem, UsageError
from ctrace.model import Container
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers import engine, oci
from ctrace.resolvers.base import Context, Hit, Monitors

if TYPE_CHECKING:
    from typing import Any, Protocol

    from ctrace.proc.cgroups import Placement
    from ctrace.resolvers.engine import Summary
else:
    Protocol = object  # subclassed for mypy's sake (ctrace/record.py)

NAME = "docker"
SOCKET = "/var/run/docker.sock"
MIN_ID_PREFIX = 4  # shorter hex ("dd", "bc") is a process name far more often than an ID
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")  # docker's container-name alphabet
_HEX = re.compile(r"[0-9a-f]+\Z")


class Daemon(Protocol):
    """What ctrace asks a docker daemon, over the local socket (engine.Engine) or the SDK (Sdk)."""

    def containers(self) -> list[Summary]: ...

    def inspect(self, ident: str) -> dict[str, Any] | None:
        """None when the container is gone (it exited between list and inspect)."""
        ...


def claims(target: str, ctx: Context) -> bool:
    """A name docker could hold, and a daemon configured; no daemon call."""
    if not _NAME.match(target) or target.isdigit():
        return False
    return configured()


def client() -> Daemon:
    """A daemon that answers a ping, or EnvironmentProblem saying why not.

    DOCKER_HOST unset or unix://: the socket, without the docker SDK (engine.py);
    anything else (tcp://, ssh://, TLS): the SDK, which knows those.
    """
    host_url = os.environ.get("DOCKER_HOST", "")
    if os.environ.get("DOCKER_TLS_VERIFY") or (host_url and not host_url.startswith("unix://")):
        return Sdk.connect()
    api = engine.Engine(host_url[len("unix://") :] or SOCKET)
    api.ping()
    return api


class Sdk:
    """The docker SDK behind the same two methods as engine.Engine."""

    def __init__(self, api: Any) -> None:
        self.api = api

    @classmethod
    def connect(cls) -> Sdk:
        try:
            import docker
            import requests
        except ImportError as err:  # an extra: only a daemon over TCP, TLS or ssh needs it
            raise EnvironmentProblem(
                f"DOCKER_HOST={os.environ.get('DOCKER_HOST', '')} needs the docker SDK, which is not installed",
                "pip install 'ctrace[remote-docker]'",
            ) from err

        try:
            api = docker.from_env(timeout=engine.TIMEOUT)
            api.ping()
        except (docker.errors.DockerException, requests.RequestException, OSError) as err:
            raise engine.unreachable(str(err).splitlines()[0]) from err
        return cls(api)

    def containers(self) -> list[Summary]:
        import docker

        try:
            found: list[Summary] = self.api.api.containers()
        except docker.errors.APIError as err:
            raise EnvironmentProblem(f"docker daemon error listing containers: {err.explanation}") from err
        return found

    def inspect(self, ident: str) -> dict[str, Any] | None:
        import docker

        try:
            data: dict[str, Any] = self.api.api.inspect_container(ident)
        except docker.errors.NotFound:
            return None  # exited between list and inspect
        except docker.errors.APIError as err:
            raise EnvironmentProblem(f"docker daemon error inspecting {ident[:12]}: {err.explanation}") from err
        return data


def names(s: Summary) -> list[str]:
    return [n.lstrip("/") for n in s["Names"]]


def label(s: Summary) -> str:
    return f"{(names(s) or ['?'])[0]} ({s['Id'][:12]})"


def matching(summaries: Iterable[Summary], target: str) -> tuple[list[Summary], list[Summary]]:
    """(exact, prefix): containers named by ``target`` (name or full ID), and those it begins."""
    listed = list(summaries)
    exact = [s for s in listed if target in names(s) or s["Id"] == target]
    by_id = len(target) >= MIN_ID_PREFIX and _HEX.match(target) is not None
    hits = [s for s in listed if (by_id and s["Id"].startswith(target)) or any(n.startswith(target) for n in names(s))]
    return exact, [s for s in hits if s not in exact]


def select(summaries: Iterable[Summary], target: str, take_all: bool) -> list[Summary]:
    """Containers named by ``target``: exact name or ID, else ID or name prefix.

    A prefix naming several containers is an error listing every candidate
    unless ``take_all`` (``--all``): a silent first pick would trace the wrong one.
    """
    exact, hits = matching(summaries, target)
    if exact:
        return exact
    if len(hits) > 1 and not take_all:
        raise UsageError(
            f"{target!r} matches {len(hits)} containers: {', '.join(label(s) for s in hits)}",
            "give the full name or ID, pass --all to trace them all, or --runtime host for processes of that name",
        )
    return hits


def container(api: Daemon, ident: str) -> Container | None:
    data = api.inspect(ident)
    if data is None:
        return None
    merged = ((data.get("GraphDriver") or {}).get("Data") or {}).get("MergedDir")
    return Container(
        id=data["Id"],
        name=str(data.get("Name", "")).lstrip("/"),
        image=str((data.get("Config") or {}).get("Image", "")),
        runtime="docker",
        init_pid=int((data.get("State") or {}).get("Pid") or 0) or None,
        merged_dir=merged or None,
        namespace="moby",
    )


LIST = "docker ps"
_CLIENT: list[Daemon] = []  # one client a run, made when first needed


def _api() -> Daemon:
    if not _CLIENT:
        _CLIENT.append(client())
    return _CLIENT[0]


def configured() -> bool:
    return bool(os.environ.get("DOCKER_HOST")) or os.path.exists(SOCKET)


def find(target: str, ctx: Context, monitors: Monitors) -> list[Hit]:
    """Containers by name, ID or prefix, from the daemon (EnvironmentProblem when it does not answer)."""
    if not configured() or not _NAME.match(target):
        return []
    api = _api()
    exact, prefix = matching(api.containers(), target)
    out = []
    for listed, is_exact in [(s, True) for s in exact] + [(s, False) for s in prefix]:
        found = container(api, listed["Id"])
        if found is not None:
            out.append(Hit(found, exact=is_exact))
    return out


def describe(where: Placement, ctx: Context) -> Hit | None:
    """The container by ID; its ID alone when the daemon does not answer (ps still shows it)."""
    ident = where.container_id or ""
    try:
        found = container(_api(), ident) if configured() else None
    except EnvironmentProblem:
        found = None
    if found is None:
        found = Container(ident, "", "", NAME, namespace=where.namespace)
    if found.merged_dir is None and where.bundle:
        found = found._replace(rootfs=oci.rootfs(where.bundle, oci.read_spec(where.bundle) or oci.Spec({}, "")))
    return Hit(found)
