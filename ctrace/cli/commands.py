"""One function per subcommand: its arguments checked and turned into a request, one call
to the library, the result handed to render (which alone reads ``-o``).

Each command imports what it uses, when it runs: ``ctrace symbols FILE`` needs
neither the resolvers nor the planner, and every module not imported is time
a user does not wait for (issue "Speed"; ``python -X importtime`` shows it).
"""

from __future__ import annotations

import argparse
import os
import shlex

from ctrace.errors import NotFound, UsageError
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers.base import Context, K8sOptions

if TYPE_CHECKING:
    from typing import TextIO

    from ctrace.plan.request import Request


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
    if args.command == "version":
        from ctrace.cli import version

        version.version(args.output, out)
        return 0
    if args.command == "completion":
        completion(args, out)
        return 0
    if args.command == "agent":
        from ctrace.agent import server

        return server.check(args) if args.check else server.serve_forever(args)
    ctx = context(args)
    if args.command == "target":
        return target(args, ctx, out)
    {"symbols": symbols, "ns": ns, "ps": ps}[args.command](args, ctx, out)
    return 0


def check_target_flags(args: argparse.Namespace) -> None:
    """Flags that would be silently ignored together are refused instead."""
    if not args.func and args.program is None:
        if not args.target:
            raise UsageError("--func is required", "see 'ctrace target --help'")
        raise UsageError(
            "--func is required", f"list the functions with '{shlex.join(['ctrace', 'symbols', args.target])}'"
        )
    if args.program is not None:
        _check_program_flags(args)
    if args.duration is not None and not args.run:
        raise UsageError("--duration needs --run", "add --run to run the command for that long")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive", "e.g. --run --duration 5")
    if args.run and (args.output not in ("text", "json") or args.quiet):
        how = "-q" if args.quiet else f"-o {args.output}"
        raise UsageError(f"--run shows what bpftrace prints (or -o json), not {how}", f"drop {how} to run")
    if args.max_funcs < 1:
        raise UsageError("--max-funcs must be at least 1")
    if not args.target and not args.selector:
        raise UsageError("the target is empty", "give a process name, pid:N, pod/NAME or -l SELECTOR")
    if args.lib is not None and not args.lib.strip():
        raise UsageError("--lib needs a name", "e.g. --lib libc")


def _check_program_flags(args: argparse.Namespace) -> None:
    """-e is the whole program: the flags that shape ctrace's own programs have no place beside it."""
    given = [f for f, on in (("--func", args.func), ("--action", args.action), ("--folded", args.folded)) if on]
    given += [f for f, on in (("--flamegraph", args.flamegraph), ("--probe", args.probe != "uprobe")) if on]
    if given:
        raise UsageError(f"-e runs your program as written: {given[0]} has no place beside it", f"drop {given[0]}")
    if args.tool != "bpftrace":
        raise UsageError("-e is a bpftrace program", "drop --tool perf")
    if not args.program.strip():
        raise UsageError("-e needs a program", "e.g. -e 'uprobe:$path:main { @[pid] = count(); }'")


def target(args: argparse.Namespace, ctx: Context, out: TextIO) -> int:
    from ctrace.plan import targets

    check_target_flags(args)
    code = _fanout(args, ctx, out)
    if code is not None:
        return code
    ctx = ctx._replace(all_matches=args.all)
    request = _request(args, ctx)
    if request.program is not None:
        from ctrace.agent import local

        return local.run_program(request, args.run, ctx, out)
    result = targets.plan(request, ctx)
    if args.run and request.output == "json":
        from ctrace.agent import local

        return local.run(result, request, ctx, out)
    if args.run:
        from ctrace.run import watch

        return watch.trace(result, request, ctx, out)
    from ctrace.cli import render

    render.plan(result, args.output, args.quiet, out)
    return 0


def _fanout(args: argparse.Namespace, ctx: Context, out: TextIO) -> int | None:
    """--run on pods: every pod through its node's agent (issue 21); None: they run here."""
    from ctrace.fanout import command as fanout

    return fanout.target(args, ctx, out) if fanout.applies(args, ctx) else None


def _request(args: argparse.Namespace, ctx: Context) -> Request:
    from ctrace.bpftrace import dialect
    from ctrace.plan.request import Request

    return Request(
        target=args.target,
        patterns=tuple(args.func or ()),
        runtime=args.runtime,
        max_funcs=args.max_funcs,
        lib=args.lib,
        probe=args.probe,
        action=_action(args),
        tool=args.tool,
        dialect=dialect.of(args.bpftrace, ctx.cache_dir),
        everything=args.all,
        duration=args.duration,
        folded=args.folded,
        flamegraph=args.flamegraph,
        argv=tuple(args.argv),
        output=args.output,
        program=args.program,
    )


def _action(args: argparse.Namespace) -> str:
    """``--run`` counts stacks in the kernel by default: printing ustack per call costs the
    traced process a perf-buffer write per call (~2,000 stacks a second on malloc)."""
    from ctrace.bpftrace.actions import ACTIONS, DEFAULT, DEFAULT_RUN

    action: str = args.action or (DEFAULT_RUN if args.run else DEFAULT)
    for flag, value in (("--folded", args.folded), ("--flamegraph", args.flamegraph)):
        if value is not None and not (args.run and ACTIONS[action].named):
            raise UsageError(f"{flag} needs --run and the stacks action", f"add --run (and drop --action {action})")
        if value is not None and not value.strip():
            raise UsageError(f"{flag} needs a file name", f"e.g. {flag} out.{'svg' if 'flame' in flag else 'folded'}")
    return action


def symbols(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    from ctrace.cli import render

    if args.runtime is None and "/" in args.what and os.path.lexists(args.what):
        if not args.func and render.listable(args.output):
            render.file_listing(args.what, ctx.cache_dir, args.output, out)
            return
        from ctrace import elf
        from ctrace.elf import cache

        info = cache.inspect(args.what, ctx.cache_dir)
        binary = elf.file_binary(args.what, info.build_id, info.stripped, info.language)
    else:
        from ctrace.plan import targets

        binary, info = targets.symbols_of(args.what, ctx, args.runtime)
    chosen = list(info.symbols)
    if args.func:
        from ctrace.plan.match import select

        chosen, missing = select(info.symbols, args.func, info.demangled)
        if missing:
            raise NotFound(f"no function matches {missing[0]!r} in {binary.path}", "drop --func to see them all")
    render.symbols(binary, info, chosen, args.output, out)


def ns(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    from ctrace.cli import render
    from ctrace.plan import ps as listing
    from ctrace.proc import procfs
    from ctrace.resolvers import host

    pid = host.parse_pid(args.pid)
    if pid is None:
        raise UsageError(f"{args.pid!r} is not a PID", "give a process ID, e.g. 'ctrace ns 1'")
    status = procfs.read_status(pid, ctx.proc_root)
    data = render.ns_dict(pid, status, procfs.namespaces(pid, ctx.proc_root))
    data.update(render.owner_dict(listing.owner(pid, ctx)))
    render.ns(data, args.output, out)


def ps(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    import sys

    from ctrace.cli import render
    from ctrace.plan import ps as listing

    procs, hidden = listing.processes(args.name, args.container, ctx)
    render.ps(procs, listing.details(procs, ctx) if render.wants_details(args.output) else {}, args.output, out)
    if hidden:
        sys.stderr.write(listing.hidden_warning(hidden))


def completion(args: argparse.Namespace, out: TextIO) -> None:
    from ctrace.cli import completion as comp

    out.write(comp.script(args.shell))
