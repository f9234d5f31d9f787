"""All resolvers, and the one place that picks which resolves a target.

Order (STYLE.md habit 2): an explicit ``--runtime``, then target syntax
(``pid:``), then each resolver's cheap claim; a plain name goes to docker
when a daemon is configured (it also matches process names, so nothing is
lost), else to the host resolver, which matches process names.
"""

from __future__ import annotations

from ctrace.errors import UsageError
from ctrace.resolvers import docker, host, kubernetes
from ctrace.resolvers.base import Context, Resolver

# Claims are tried in this order; a name nobody claims is a host process name.
RESOLVERS: dict[str, Resolver] = {
    "k8s": kubernetes,  # pod/NAME, deploy/NAME, -l, and bare names under kubectl
    "host": host,  # then pid:N and bare PIDs, which are never containers
    "docker": docker,
}
ALIASES = {"kubernetes": "k8s"}


def choose(target: str, ctx: Context, runtime: str | None = None) -> Resolver:
    if runtime is not None:
        try:
            return RESOLVERS[ALIASES.get(runtime, runtime)]
        except KeyError:
            raise UsageError(f"unknown runtime {runtime!r}", f"choose one of: {', '.join(RESOLVERS)}") from None
    if not target.strip() and ctx.k8s.selector is None:
        raise UsageError("the target is empty", "give a process name, pid:N or a container name")
    for resolver in RESOLVERS.values():
        if resolver.claims(target, ctx):
            return resolver
    return host


__all__ = ["RESOLVERS", "Context", "Resolver", "choose"]
