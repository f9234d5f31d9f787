"""Docker containers: a container name, a full or short ID, a name prefix, or a process name.

Every process is one target keyed by its host PID. Which container it is in
comes from its cgroup (``ctrace.cgroups``), so a name that is both a container
and a process inside it gives one target. The daemon is asked only for what
/proc cannot tell: names, image, the init PID and MergedDir.

The local socket is spoken to directly (``engine.py``); only a daemon over
TCP, TLS or ssh needs the ``docker`` package, which only this module imports,
inside the functions that use it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from ctrace import cgroups, procfs
from ctrace.errors import CtraceError, EnvironmentProblem, NotFound, UsageError
from ctrace.model import Container, Process
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers import engine, host
from ctrace.resolvers.base import Context

if TYPE_CHECKING:
    from typing import Any, Protocol

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
    return bool(os.environ.get("DOCKER_HOST")) or os.path.exists(SOCKET)


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


def select(summaries: Iterable[Summary], target: str, take_all: bool) -> list[Summary]:
    """Containers named by ``target``: exact name or ID, else ID or name prefix.

    A prefix naming several containers is an error listing every candidate
    unless ``take_all`` (``--all``): a silent first pick would trace the wrong one.
    """
    listed = list(summaries)
    exact = [s for s in listed if target in names(s) or s["Id"] == target]
    if exact:
        return exact
    by_id = len(target) >= MIN_ID_PREFIX and _HEX.match(target) is not None
    hits = [s for s in listed if (by_id and s["Id"].startswith(target)) or any(n.startswith(target) for n in names(s))]
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
    )


def placements(ctx: Context) -> dict[int, cgroups.Placement]:
    return procfs.placements(ctx.proc_root)


def _placements_of(pids: Iterable[int], ctx: Context) -> dict[int, cgroups.Placement]:
    """Like placements(), for these PIDs only."""
    out = {}
    for pid in pids:
        try:
            found = procfs.placement(pid, ctx.proc_root)
        except CtraceError:
            continue  # exited: host.process says so in its turn
        if found.container_id:
            out[pid] = found
    return out


class Enricher:
    """Container details by id, each asked of the daemon once."""

    def __init__(self, api: Daemon | None, known: Iterable[Container] = ()) -> None:
        self.api = api
        self.cache: dict[str, Container | None] = {c.id: c for c in known}

    def of(self, where: cgroups.Placement) -> Container | None:
        ident = where.container_id
        if ident is None or where.runtime is None:
            return None
        if ident not in self.cache:
            found = container(self.api, ident) if self.api is not None and where.runtime == "docker" else None
            self.cache[ident] = found or Container(ident, "", "", where.runtime)
        return self.cache[ident]

    def process(self, pid: int, ctx: Context, where: cgroups.Placement | None) -> Process | None:
        try:
            proc = host.process(pid, ctx)
        except CtraceError:
            return None  # exited, or a kernel thread
        found = self.of(where) if where else None
        if found is None:
            return proc
        return proc._replace(runtime=found.runtime, container=found, init=found.init_pid == proc.pid)


def resolve(target: str, ctx: Context) -> list[Process]:
    try:
        api = client()
    except EnvironmentProblem as err:
        return _host_fallback(target, ctx, err)
    chosen = [c for c in (container(api, s["Id"]) for s in select(api.containers(), target, ctx.all_matches)) if c]
    pids = set(host.matching_pids(target, ctx))
    if chosen:  # every process's cgroup, to find the containers' processes
        where = placements(ctx)
        ids = {c.id for c in chosen}
        pids.update(pid for pid, p in where.items() if p.container_id in ids)
    else:  # a process name: only the matches' cgroups (a scan of 2,000 costs ~100 ms)
        where = _placements_of(pids, ctx)
    pids.discard(ctx.self_pid)
    enrich = Enricher(api, chosen)
    found = [p for p in (enrich.process(pid, ctx, where.get(pid)) for pid in sorted(pids)) if p]
    if not found:
        raise NotFound(
            f"no process named {target!r}, and no container",
            "list processes with 'ctrace ps', containers with 'docker ps'",
        )
    return found


def _host_fallback(target: str, ctx: Context, err: EnvironmentProblem) -> list[Process]:
    """No daemon: the target may still be a process name the host resolver finds."""
    try:
        found = host.resolve(target, ctx)
    except NotFound:
        raise err from None  # nothing by that name here: it was probably a container
    note = f"{err.message}; matched process names only, and container names are unknown"
    return [p._replace(notes=(*p.notes, note)) for p in found]


def annotate(procs: list[Process], ctx: Context, where: dict[int, cgroups.Placement] | None = None) -> list[Process]:
    """``ctrace ps``: each process with its container; names from the daemon when it answers."""
    where = placements(ctx) if where is None else where
    api: Daemon | None = None
    if any(p.runtime == "docker" for p in where.values()):
        try:
            api = client()
        except EnvironmentProblem:
            api = None  # ps still shows container ids from the cgroups
    enrich = Enricher(api)
    out = []
    for p in procs:
        found = enrich.of(where[p.pid]) if p.pid in where else None
        out.append(p._replace(runtime=found.runtime, container=found, init=found.init_pid == p.pid) if found else p)
    return out


def members(name: str, ctx: Context) -> tuple[Container, list[Process]]:
    """``ctrace ps --container NAME``: one container and its processes."""
    api = client()
    hits = select(api.containers(), name, take_all=False)
    found = container(api, hits[0]["Id"]) if hits else None
    if found is None:
        raise NotFound(f"no running container named {name!r}", "list containers with 'docker ps'")
    pids = sorted(pid for pid, p in placements(ctx).items() if p.container_id == found.id)
    enrich = Enricher(api, [found])
    where = cgroups.Placement(found.id, "docker")
    return found, [p for p in (enrich.process(pid, ctx, where) for pid in pids) if p]
