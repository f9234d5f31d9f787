"""All resolvers, and the one place that picks which resolves a target.

The one list of ``--runtime`` names is ``registry.py`` (``RUNTIMES``, ``names()``):
the parser's check and help, completion and the errors all read it, and importing
it costs no runtime module (``ctrace --help`` stays fast).

Order (STYLE.md habit 2): an explicit ``--runtime`` (a resolver, or one
container runtime of ``RUNTIMES``), then target syntax (``pid:``,
``pod/``), then each resolver's cheap claim; a plain name goes to
``containers``, which matches process names, containers of every runtime and
pods on this node, with the precedence stated there.
"""

from __future__ import annotations

from ctrace.errors import UsageError
from ctrace.resolvers.base import Context, Resolver
from ctrace.resolvers.registry import ALIASES, RUNTIMES, check_runtime, names


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
        from ctrace.resolvers import containers

        name = ALIASES.get(check_runtime(runtime), runtime)
        return containers.Only(name) if name in RUNTIMES else known[name]
    if not target.strip() and ctx.k8s.selector is None:
        raise UsageError("the target is empty", "give a process name, pid:N or a container name")
    for resolver in known.values():
        if resolver.claims(target, ctx):
            return resolver
    return known["host"]


__all__ = ["ALIASES", "RUNTIMES", "Context", "Resolver", "check_runtime", "choose", "names", "resolvers"]
