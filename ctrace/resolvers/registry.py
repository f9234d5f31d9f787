"""The one list of ``--runtime`` names: the container runtimes (``RUNTIMES``, each one's module
in resolvers/) and the resolvers a target may name. The parser's check and help, completion
and the errors read it here; importing it imports no runtime module.
"""

from __future__ import annotations

from ctrace.errors import UsageError

# The registry of container runtimes: each one's --runtime name and its module in resolvers/,
# in the order hits are kept (docker before containerd, whose moby namespace holds docker's
# containers). A new runtime is its module plus one line here; runtimes.runtimes() imports them.
RUNTIMES = {
    "docker": "docker",
    "containerd": "containerd",
    "podman": "podman",
    "cri-o": "crio",
}
ALIASES = {"kubernetes": "k8s", "crio": "cri-o"}  # other spellings --runtime accepts


def names() -> tuple[str, ...]:
    """Every name --runtime takes (but the aliases): the resolvers a target may name, then the runtimes."""
    return ("host", "k8s", *RUNTIMES)


def check_runtime(runtime: str) -> str:
    """``--runtime``'s value as given, or a one-line refusal listing every name."""
    if ALIASES.get(runtime, runtime) not in names():
        raise UsageError(f"unknown runtime {runtime!r}", f"choose one of: {', '.join(names())}")
    return runtime
