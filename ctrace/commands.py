"""One function per subcommand: call the library, hand the result to render."""

from __future__ import annotations

import argparse
import os
from typing import TextIO

from ctrace import plan, procfs, render
from ctrace.errors import NotFound, UsageError
from ctrace.match import match
from ctrace.model import Process
from ctrace.resolvers import Context, host


def context(args: argparse.Namespace) -> Context:
    root = args.proc_root.rstrip("/") or "/"
    if not os.path.isdir(f"{root}/self") and not os.path.isdir(f"{root}/1"):
        raise_env(root)
    return Context(proc_root=root, self_pid=os.getpid(), cache_dir=cache_dir(args))


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
    handler = {"target": target, "symbols": symbols, "ns": ns, "ps": ps}[args.command]
    handler(args, ctx, out)
    return 0


def target(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    if args.max_funcs < 1:
        raise UsageError("--max-funcs must be at least 1")
    found = plan.targets(args.target, args.func, ctx, args.runtime, args.max_funcs)
    if args.output == "json":
        render.dump({"targets": [render.target_dict(t) for t in found]}, out)
    else:
        render.targets_text(found, out)


def symbols(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    binary, info = plan.symbols_of(args.what, ctx, args.runtime)
    chosen = list(info.symbols)
    if args.func:
        chosen, missing = plan.select(info.symbols, args.func)
        if missing:
            raise NotFound(f"no function matches {missing[0]!r} in {binary.path}", "drop --func to see them all")
    if args.output == "json":
        render.symbols_json(binary, info, chosen, out)
    else:
        render.symbols_text(binary, info, chosen, out)


def ns(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    pid = host.parse_pid(args.pid)
    if pid is None:
        raise UsageError(f"{args.pid!r} is not a PID", "e.g. ctrace ns 1234")
    status = procfs.read_status(pid, ctx.proc_root)
    data = render.ns_dict(pid, status, procfs.namespaces(pid, ctx.proc_root))
    if args.output == "json":
        render.dump(data, out)
    else:
        render.ns_text(data, out)


def ps(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    pids = host.matching_pids(args.name, ctx) if args.name else procfs.pids(ctx.proc_root)
    procs = [p for p in (_quiet_process(pid, ctx) for pid in pids) if p is not None]
    if args.output == "json":
        render.dump({"processes": [_ps_dict(p) for p in procs]}, out)
    else:
        render.ps_text(procs, out)


def _quiet_process(pid: int, ctx: Context) -> Process | None:
    """A user-space process, or None for kernel threads and processes that exited."""
    try:
        return host.process(pid, ctx)
    except Exception:  # noqa: BLE001 - ps lists what it can read
        return None


def _ps_dict(p: Process) -> dict[str, object]:
    d = render.process_dict(p)
    d["exe"] = p.exe
    d["deleted"] = p.deleted
    return d


__all__ = ["match", "run"]
