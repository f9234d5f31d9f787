"""One function per subcommand: call the library, hand the result to render.

Each command imports what it uses, when it runs: ``ctrace symbols FILE`` needs
neither the resolvers nor the planner, and every module not imported is time
a user does not wait for (issue "Speed"; ``python -X importtime`` shows it).
"""

from __future__ import annotations

import argparse
import os

from ctrace.errors import NotFound, UsageError
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers.base import Context, K8sOptions

if TYPE_CHECKING:
    from typing import TextIO

    from ctrace.model import Command, Process
    from ctrace.plan import Plan, Request


def context(args: argparse.Namespace) -> Context:
    root = args.proc_root.rstrip("/") or "/"
    if not os.path.isdir(f"{root}/self") and not os.path.isdir(f"{root}/1"):
        raise_env(root)
    return Context(proc_root=root, self_pid=os.getpid(), k8s=k8s_options(args), cache_dir=cache_dir(args))


def k8s_options(args: argparse.Namespace) -> K8sOptions:
    get = vars(args).get
    if get("request_timeout", 10.0) <= 0:
        raise UsageError("--request-timeout must be positive")
    return K8sOptions(
        namespace=get("namespace"),
        all_namespaces=bool(get("all_namespaces")),
        context=get("context"),
        kubeconfig=get("kubeconfig"),
        container=get("container") if get("command") != "ps" else None,
        selector=get("selector"),
        under_kubectl=bool(get("under_kubectl")),
        request_timeout=get("request_timeout") or 10.0,
    )


def cache_dir(args: argparse.Namespace) -> str | None:
    if args.no_cache or os.environ.get("CTRACE_NO_CACHE", "") not in ("", "0"):
        return None
    from ctrace.elf import cache

    return cache.default_dir()


def raise_env(root: str) -> None:
    from ctrace.errors import EnvironmentProblem

    raise EnvironmentProblem(f"{root} is not a proc filesystem", "pass --proc-root where the host's /proc is mounted")


def run(args: argparse.Namespace, out: TextIO) -> int:
    ctx = context(args)
    if args.command == "target":
        return target(args, ctx, out)
    handler = {"symbols": symbols, "ns": ns, "ps": ps, "completion": completion, "__complete": complete}[args.command]
    handler(args, ctx, out)
    return 0


def target(args: argparse.Namespace, ctx: Context, out: TextIO) -> int:
    from ctrace import dialect, plan, render, text

    if args.max_funcs < 1:
        raise UsageError("--max-funcs must be at least 1")
    if not args.target and not args.selector:
        raise UsageError("the target is empty", "give a process name, pid:N, pod/NAME or -l SELECTOR")
    if args.lib is not None and not args.lib.strip():
        raise UsageError("--lib needs a name", "e.g. --lib libc")
    ctx = ctx._replace(all_matches=args.all)
    request = plan.Request(
        args.target,
        tuple(args.func),
        args.runtime,
        args.max_funcs,
        args.lib,
        args.probe,
        args.action,
        args.tool,
        dialect.of(args.bpftrace, ctx.cache_dir),
    )
    result = plan.plan(request, ctx)
    if args.run:
        from ctrace import runner

        chosen = chosen_command(result, args.all, request, ctx)
        legend(result, out)
        return runner.run(chosen.argv, args.duration)
    if args.quiet:
        text.quiet(result.targets, result.remote, out)
    elif args.output in ("json", "yaml"):
        render.data(render.plan_dict(result), args.output, out)
    else:
        text.plan(result.targets, result.remote, out, wide=args.output == "wide")
    return 0


def legend(result: Plan, out: TextIO) -> None:
    """Before --run output: the container or pod of each PID, and what the program admits."""
    from ctrace import binding

    for line in binding.legend([t.process for t in result.targets]):
        out.write(f"ctrace: {line}\n")
    for statement in dict.fromkeys(p.bound for t in result.targets for p in t.probes if p.bound):
        out.write(f"ctrace: {statement}\n")
    out.flush()  # before bpftrace writes to the same stream


def chosen_command(result: Plan, everything: bool, request: Request, ctx: Context) -> Command:
    """The single command --run starts; several probes need --all (one program)."""
    probes = [(t.process.pid, p) for t in result.targets for p in t.probes]
    if result.remote:
        if len(result.remote) == 1 and not probes and result.remote[0].command is not None:
            return result.remote[0].command
        raise UsageError("--run cannot run pods on other nodes from here", "run the printed kubectl exec commands")
    if len(probes) == 1:
        return probes[0][1].commands[0]
    if not everything:
        raise UsageError(f"--run found {len(probes)} probes to run", "add --all to run them as one bpftrace program")
    if request.action != "stack":
        raise UsageError(
            f"--run --all combines stack probes only, not --action {request.action}", "run one target at a time"
        )
    from ctrace import plan

    return plan.combined(result, request, ctx)


def symbols(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    from ctrace import render

    if args.runtime is None and "/" in args.what and os.path.lexists(args.what):
        if not args.func and args.output in ("json", "text"):
            render.file_listing(args.what, ctx.cache_dir, args.output, out)
            return
        from ctrace import elf
        from ctrace.elf import cache

        info = cache.inspect(args.what, ctx.cache_dir)
        binary = elf.file_binary(args.what, info.build_id, info.stripped, info.language)
    else:
        from ctrace import plan

        binary, info = plan.symbols_of(args.what, ctx, args.runtime)
    chosen = list(info.symbols)
    if args.func:
        from ctrace.plan import select

        chosen, missing = select(info.symbols, args.func, info.demangled)
        if missing:
            raise NotFound(f"no function matches {missing[0]!r} in {binary.path}", "drop --func to see them all")
    if args.output == "json":
        render.symbols_json(binary, info, chosen, out)
    elif args.output == "yaml":
        render.data(render.symbols_dict(binary, info, chosen), args.output, out)
    else:
        render.symbols_text(binary, info, chosen, out)


def ns(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    from ctrace import procfs, render
    from ctrace.resolvers import host

    pid = host.parse_pid(args.pid)
    if pid is None:
        raise UsageError(f"{args.pid!r} is not a PID", "e.g. ctrace ns 1234")
    status = procfs.read_status(pid, ctx.proc_root)
    data = render.ns_dict(pid, status, procfs.namespaces(pid, ctx.proc_root))
    data.update(_owner(pid, ctx))
    if args.output in ("json", "yaml"):
        render.data(data, args.output, out)
    else:
        render.ns_text(data, out)


def ps(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    from ctrace import procfs, render
    from ctrace.resolvers import docker, host, kubernetes

    where = procfs.placements(ctx.proc_root)
    if args.container:
        procs = docker.members(args.container, ctx)[1]
        if args.name:
            procs = [p for p in procs if p.pid in set(host.matching_pids(args.name, ctx))]
    else:
        pids = host.matching_pids(args.name, ctx) if args.name else procfs.pids(ctx.proc_root)
        procs = docker.annotate([p for p in (_quiet_process(pid, ctx) for pid in pids) if p is not None], ctx, where)
    procs = kubernetes.annotate(procs, ctx, where)
    if args.output in ("json", "yaml"):
        render.data({"processes": [_ps_dict(p) for p in procs]}, args.output, out)
    else:
        render.ps_text(procs, out)


def _owner(pid: int, ctx: Context) -> dict[str, object]:
    """The container and pod of a PID, for ``ns`` (the reverse lookup)."""
    from ctrace import procfs, render
    from ctrace.resolvers import docker, kubernetes

    proc = _quiet_process(pid, ctx)
    if proc is None:
        return {"container": None, "pod": None}
    found = procfs.placement(pid, ctx.proc_root)
    where = {pid: found} if found.container_id else {}
    (proc,) = kubernetes.annotate(docker.annotate([proc], ctx, where), ctx, where)
    d = render.process_dict(proc)
    return {"container": d["container"], "pod": d["pod"]}


def completion(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    from ctrace import completion as comp

    out.write(comp.script(args.shell))


def complete(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    from ctrace import completion as comp

    if args.kind == "targets":
        comp.targets(ctx, out)
    else:
        comp.funcs(args.target, ctx, out)


def _quiet_process(pid: int, ctx: Context) -> Process | None:
    """A user-space process, or None for kernel threads and processes that exited."""
    from ctrace.resolvers import host

    try:
        return host.process(pid, ctx)
    except Exception:  # noqa: BLE001 - ps lists what it can read
        return None


def _ps_dict(p: Process) -> dict[str, object]:
    from ctrace import render

    d = render.process_dict(p)
    d["exe"] = p.exe
    d["deleted"] = p.deleted
    d["init"] = p.init
    d["container_pid"] = p.nspid[-1]  # seed 7.3: the PID `docker top` does not show
    return d
