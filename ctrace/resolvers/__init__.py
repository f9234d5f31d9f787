"""All resolvers, and the one place that picks which resolves a target.

Order (STYLE.md habit 2): an explicit ``--runtime``, then target syntax
(``pid:``), then each resolver's cheap claim; a plain name goes to docker
when a daemon is configured (it also matches process names, so nothing is
lost), else to the host resolver, which matches process names.
"""

from __future__ import annotations

from ctrace.errors import UsageError
from ctrace.resolvers.base import Context, Resolver

ALIASES = {"kubernetes": "k8s"}


def resolvers() -> dict[str, Resolver]:
    """Every resolver, in the order their claims are tried; a name nobody claims is a host process name.

    Imported when a target is resolved, not with the package: ``Context`` lives
    here too, and ``ctrace symbols FILE`` needs it but no resolver.
    """
    from ctrace.resolvers import docker, host, kubernetes

    return {
        "k8s": kubernetes,  # pod/NAME, deploy/NAME, -l, and bare names under kubectl
        "host": host,  # then pid:N and bare PIDs, which are never containers
        "docker": docker,
    }


def choose(target: str, ctx: Context, runtime: str | None = None) -> Resolver:
    known = resolvers()
    if runtime is not None:
        try:
            return known[ALIASES.get(runtime, runtime)]
        except KeyError:
            raise UsageError(f"unknown runtime {runtime!r}", f"choose one of: {', '.join(known)}") from None
    if not target.strip() and ctx.k8s.selector is None:
        raise UsageError("the target is empty", "give a process name, pid:N or a container name")
    for resolver in known.values():
        if resolver.claims(target, ctx):
            return resolver
    return known["host"]


__all__ = ["Context", "Resolver", "choose", "resolvers"]
