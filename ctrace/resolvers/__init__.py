"""All resolvers, and the one place that picks which resolves a target.

Order (STYLE.md habit 2): an explicit ``--runtime`` (a resolver, or one
container runtime of ``runtimes.py``), then target syntax (``pid:``,
``pod/``), then each resolver's cheap claim; a plain name goes to
``containers``, which matches process names, containers of every runtime and
pods on this node, with the precedence stated there.
"""

from __future__ import annotations

from ctrace.errors import UsageError
from ctrace.resolvers.base import Context, Resolver

ALIASES = {"kubernetes": "k8s", "crio": "cri-o"}


def resolvers() -> dict[str, Resolver]:
    """Every resolver, in the order their claims are tried; a name nobody claims is a host process name.

    Imported when a target is resolved, not with the package: ``Context`` lives
    here too, and ``ctrace symbols FILE`` needs it but no resolver.
    """
    from ctrace.resolvers import containers, host, kubernetes

    return {
        "k8s": kubernetes,  # pod/NAME, deploy/NAME, -l, and bare names under kubectl
        "host": host,  # then pid:N and bare PIDs, which are never containers
        "container": containers,  # names: processes, containers of every runtime, pods on this node
    }


def choose(target: str, ctx: Context, runtime: str | None = None) -> Resolver:
    known = resolvers()
    if runtime is not None:
        from ctrace.resolvers import containers, runtimes

        name = ALIASES.get(runtime, runtime)
        if name in runtimes.runtimes():
            return containers.Only(name)
        if name in known and name != "container":
            return known[name]
        choices = ["host", "k8s", *runtimes.runtimes()]
        raise UsageError(f"unknown runtime {runtime!r}", f"choose one of: {', '.join(choices)}")
    if not target.strip() and ctx.k8s.selector is None:
        raise UsageError("the target is empty", "give a process name, pid:N or a container name")
    for resolver in known.values():
        if resolver.claims(target, ctx):
            return resolver
    return known["host"]


__all__ = ["Context", "Resolver", "choose", "resolvers"]
