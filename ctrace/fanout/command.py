"""`ctrace target deploy/NAME | ds/NAME | sts/NAME | -l SEL | pod/NAME --run`: the fan-out's
entry from the CLI, and when it applies (the local path stays for everything else)."""

from __future__ import annotations

import argparse

from ctrace.errors import UsageError
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TextIO

    from ctrace.resolvers.base import Context

PROBE = {"uprobe": "entry", "uretprobe": "uretprobe", "return": "return"}  # ctrace's --probe -> protocol's


def applies(args: argparse.Namespace, ctx: Context) -> bool:
    """--run on a Kubernetes target with an API server to ask, and not inside an agent (where
    NODE_NAME is set and a pod is traced on this node, by the local path)."""
    import os

    from ctrace.resolvers import kubernetes

    if os.environ.get("CTRACE_AGENT_CHILD"):  # the agent's own child (ctrace/_agent_child.py)
        return False
    if not args.run or args.tool != "bpftrace" or args.runtime not in (None, "k8s"):
        return False
    if not kubernetes.claims(args.target or "", ctx) or not kubernetes.configured(ctx.k8s):
        return False
    return not args.target or not args.target.isdigit()


def target(args: argparse.Namespace, ctx: Context, out: TextIO) -> int | None:
    """The run's exit code, or None when every pod is on this node (the local path takes it)."""
    from ctrace.fanout import client
    from ctrace.fanout.agents import Directory
    from ctrace.resolvers.kubernetes import Api

    if (args.folded or args.flamegraph) and (args.action or "stacks") != "stacks":
        raise UsageError("--folded and --flamegraph need the stacks action", "drop --action")
    opts = client.Options(
        target=args.target or "",
        functions=tuple(args.func or ()),
        action=args.action or "stacks",
        probe=PROBE[args.probe],
        lib=args.lib,
        container=ctx.k8s.container,
        duration=args.duration,
        program=args.program,
        folded=args.folded,
        flamegraph=args.flamegraph,
        json=args.output == "json",
        agent_namespace=args.agent_namespace or "ctrace-system",
        k8s_flags=_k8s_flags(ctx),
    )
    api = Api(ctx.k8s)
    return client.run(opts, api, Directory(api, opts.agent_namespace), out)


def _k8s_flags(ctx: Context) -> tuple[str, ...]:
    k = ctx.k8s
    pairs = (("--kubeconfig", k.kubeconfig), ("--context", k.context), ("--request-timeout", str(k.request_timeout)))
    return tuple(x for flag, value in pairs if value for x in (flag, value))
