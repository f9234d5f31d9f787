"""One function per subcommand: call the library, hand the result to render.

Each command imports what it uses, when it runs: ``ctrace symbols FILE`` needs
neither the resolvers nor the planner, and every module not imported is time
a user does not wait for (issue "Speed"; ``python -X importtime`` shows it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence

from ctrace.errors import CtraceError, NotFound, NotTraceable, UsageError
from ctrace.record import TYPE_CHECKING
from ctrace.resolvers.base import Context, K8sOptions

if TYPE_CHECKING:
    from typing import TextIO

    from ctrace import runner
    from ctrace.elf import ElfInfo
    from ctrace.model import Command, Container, Process, Remote, Symbol
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
    if args.command == "version":
        version(args.output, out)
        return 0
    if args.command == "completion":
        completion(args, out)
        return 0
    ctx = context(args)
    if args.command == "target":
        return target(args, ctx, out)
    if args.command == "ps":
        return ps(args, ctx, out)
    {"symbols": symbols, "ns": ns}[args.command](args, ctx, out)
    return 0


def versions() -> dict[str, str]:
    """ctrace's version, and the bpftrace and kernel it will emit commands for."""
    import platform
    import shutil
    import subprocess

    from ctrace import __version__

    bpftrace = shutil.which("bpftrace")
    found = "not installed"
    if bpftrace:
        got = subprocess.run([bpftrace, "--version"], capture_output=True, text=True, timeout=10)
        found = f"{(got.stdout.strip() or got.stderr.strip()).removeprefix('bpftrace ')} ({bpftrace})"
    return {"ctrace": __version__, "bpftrace": found, "kernel": platform.release()}


def version_text(out: TextIO) -> None:
    out.write("".join(f"{k} {v}\n" for k, v in versions().items()))


def version(output: str, out: TextIO) -> None:
    from ctrace import render

    if output in ("json", "yaml"):
        render.data(versions(), output, out)
    else:
        version_text(out)


def check_target_flags(args: argparse.Namespace) -> None:
    """Flags that would be silently ignored together are refused instead."""
    if not args.func:
        if not args.target:
            raise UsageError("--func is required", "see 'ctrace target --help'")
        raise UsageError(
            "--func is required", f"list the functions with '{shlex.join(['ctrace', 'symbols', args.target])}'"
        )
    if args.duration is not None and not args.run:
        raise UsageError("--duration needs --run", "add --run to run the command for that long")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive", "e.g. --run --duration 5")
    if args.run and (args.output != "text" or args.quiet):
        how = "-q" if args.quiet else f"-o {args.output}"
        raise UsageError(f"--run shows what bpftrace prints, not {how}", f"drop {how} to run, or --run to print")


def target(args: argparse.Namespace, ctx: Context, out: TextIO) -> int:
    from ctrace import dialect, plan, render, text

    check_target_flags(args)
    if args.max_funcs < 1:
        raise UsageError("--max-funcs must be at least 1")
    if not args.target and not args.selector:
        raise UsageError("the target is empty", "give a process name, pid:N, pod/NAME or -l SELECTOR")
    if args.lib is not None and not args.lib.strip():
        raise UsageError("--lib needs a name", "e.g. --lib libc")
    ctx = ctx._replace(all_matches=args.all)
    action = _action(args)
    request = plan.Request(
        args.target,
        tuple(args.func),
        args.runtime,
        args.max_funcs,
        args.lib,
        args.probe,
        action,
        args.tool,
        dialect.of(args.bpftrace, ctx.cache_dir),
    )
    result = plan.plan(request, ctx)
    if args.run:
        return _run(result, args, request, ctx, out)
    if args.quiet:
        text.quiet(result.targets, result.remote, out)
        unreachable(result.remote)
        return 0
    if args.output in ("json", "yaml"):
        render.data(render.plan_dict(result), args.output, out)
    else:
        text.plan(result.targets, result.remote, out, wide=args.output == "wide")
    return 0


def _run(result: Plan, args: argparse.Namespace, request: Request, ctx: Context, out: TextIO) -> int:
    """--run: bpftrace (or perf) started on the chosen command, watched (run_traced)."""
    _warn_before_run(result)
    if args.tool == "perf":
        from ctrace import perf

        files = {k: getattr(args, k, None) for k in ("folded", "flamegraph")}  # issue15a's options
        return perf.run(result, args.duration, out, ctx.proc_root, **files)
    from ctrace import runner

    chosen = chosen_command(result, args.all, request, ctx)
    if chosen.form == "agent":  # the agent's ctrace names the stacks on that node and prints them
        if args.folded or args.flamegraph:
            raise UsageError(
                "--folded and --flamegraph are written on this node only",
                "run the printed kubectl exec command with --folded FILE: the file is written in the agent",
            )
        return runner.run(chosen.argv, args.duration)
    legend(result, sys.stderr)  # beside ctrace's warnings: stdout is the trace's own
    if request.action == "stacks":
        names = naming(result, args, ctx.proc_root)
        return run_traced(result, args, lambda: runner.run_stacks(chosen.argv, args.duration, names, out))
    return run_traced(result, args, lambda: runner.run(chosen.argv, args.duration))


def unreachable(remotes: Sequence[Remote]) -> None:
    """-q prints commands only: a pod with none to print is an error, not an empty line."""
    missing = [r for r in remotes if r.command is None]
    if missing:
        pod = missing[0].pod
        raise NotTraceable(
            f"pod {pod.namespace}/{pod.name} runs on node {pod.node}, and no ctrace node agent runs there: "
            "no command to print",
            f"run ctrace on node {pod.node}, or drop -q to see what was found",
        )


def _warn_before_run(result: Plan) -> None:
    """--run prints no plan, but what makes its output short (no frame pointers) is said first."""
    import sys

    for t in result.targets:
        for w in t.warnings:
            sys.stderr.write(f"ctrace: warning: pid {t.process.pid}: {w}\n")


def run_traced(result: Plan, args: argparse.Namespace, start: Callable[[], int]) -> int:
    """--run, watched: when every traced process has exited (or been replaced by a restart),
    bpftrace is stopped as Ctrl-C would stop it and the run ends with exit 1 and a word.
    A program bound by a PID predicate would otherwise run on, printing nothing, forever;
    one run with -p would end with status 0, which reads as "it never fired"."""
    import signal
    import threading

    started = {t.process.pid: _start_time(t.process.pid, args.proc_root) for t in result.targets}
    done = threading.Event()

    def gone() -> list[int]:
        return [pid for pid, when in started.items() if when is None or _start_time(pid, args.proc_root) != when]

    def watch() -> None:
        while not done.wait(0.5):
            if started and len(gone()) == len(started) and not done.is_set():
                os.kill(os.getpid(), signal.SIGINT)  # runner stops bpftrace as on Ctrl-C
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        code = start()  # runs bpftrace until it ends, Ctrl-C, --duration or the watcher's SIGINT
    finally:
        done.set()
    left = gone()
    if left and code in (0, 130):
        comm = next(t.process.comm for t in result.targets if t.process.pid == left[0])
        if args.target.startswith("pid:") or args.target.isdigit():
            hint = f"if it was restarted, find its new PID: '{shlex.join(['ctrace', 'ps', comm])}'"
        else:
            hint = f"if it was restarted, trace it again: '{shlex.join(['ctrace', *args.argv])}'"
        if len(left) == len(started):
            raise NotFound(f"process {left[0]} ({comm}) exited while it was traced; bpftrace stopped", hint)
        import sys

        sys.stderr.write(f"warning: process {', '.join(map(str, left))} exited while it was traced\n")
    return code


def _start_time(pid: int, proc_root: str) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks): a PID reused by another process
    differs. None for a process that is gone or a zombie (exited, not yet reaped)."""
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def _action(args: argparse.Namespace) -> str:
    """``--run`` counts stacks in the kernel by default: printing ustack per call costs the
    traced process a perf-buffer write per call (~2,000 stacks a second on malloc)."""
    action: str = args.action or ("stacks" if args.run else "stack")
    for flag, value in (("--folded", args.folded), ("--flamegraph", args.flamegraph)):
        if value is not None and not (args.run and action == "stacks"):
            raise UsageError(f"{flag} needs --run and the stacks action", f"add --run (and drop --action {action})")
        if value is not None and not value.strip():
            raise UsageError(f"{flag} needs a file name", f"e.g. {flag} out.{'svg' if 'flame' in flag else 'folded'}")
    return action


def naming(result: Plan, args: argparse.Namespace, proc_root: str) -> runner.Naming:
    """Labels for the named stacks: each PID's process and container, each attach point's function."""
    from ctrace import runner

    labels = {t.process.pid: _label(t.process) for t in result.targets}
    from ctrace.emit import label

    # The program keys each function by its short label (emit.label): the label back to the name.
    functions = {label(p.demangled or p.symbol): p.demangled or p.symbol for t in result.targets for p in t.probes}
    funcs = sorted({p.demangled or p.symbol for t in result.targets for p in t.probes})
    comms = sorted({t.process.comm for t in result.targets})
    shown = ", ".join(funcs[:3]) + (f" and {len(funcs) - 3} more" if len(funcs) > 3 else "")
    pids = ", ".join(str(pid) for pid in sorted(labels)[:5]) + (", ..." if len(labels) > 5 else "")
    title = f"ctrace: stacks of {shown} in {', '.join(comms)} (PID {pids})"
    return runner.Naming(labels, functions, title, args.folded, args.flamegraph, proc_root)


def _label(p: Process) -> str:
    if p.pod is not None:
        return f"{p.comm}, pod {p.pod.namespace}/{p.pod.name}, container {p.pod.container}"
    if p.container is not None:
        return f"{p.comm}, {p.container.runtime} container {p.container.name}"
    return f"{p.comm}, host"


def legend(result: Plan, out: TextIO) -> None:
    """Before --run output: the container or pod of each PID, and what the program admits."""
    from ctrace import binding

    for line in binding.legend([t.process for t in result.targets]):
        out.write(f"ctrace: {line}\n")
    for statement in dict.fromkeys(p.bound for t in result.targets for p in t.probes if p.bound):
        out.write(f"ctrace: {statement}\n")
    out.flush()  # before bpftrace writes to the terminal


def chosen_command(result: Plan, everything: bool, request: Request, ctx: Context) -> Command:
    """The single command --run starts; several probes need --all (one program)."""
    probes = [(t.process.pid, p) for t in result.targets for p in t.probes]
    if result.remote:
        if len(result.remote) == 1 and not probes and result.remote[0].command is not None:
            return result.remote[0].command
        raise UsageError("--run cannot run pods on other nodes from here", "run the printed kubectl exec commands")
    if len(probes) == 1:
        return probes[0][1].commands[0]
    if not everything and len(result.targets) > 1:
        raise UsageError(f"--run found {len(probes)} probes to run", "add --all to run them as one bpftrace program")
    if request.action not in ("stack", "stacks"):
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
    elif args.output == "wide":
        render.symbols_wide(binary, info, chosen, _attach_columns(binary.host_path, info, chosen), out)
    else:
        render.symbols_text(binary, info, chosen, out)


def _attach_columns(path: str, info: ElfInfo, chosen: Sequence[Symbol]) -> list[tuple[str, str]]:
    """For -o wide: each function's file offset, and whether bpftrace can attach to it by
    name (a unique name from .symtab/.dynsym it can quote) or only by address."""
    from ctrace import emit
    from ctrace.elf.reader import open_elf

    elf_file = open_elf(path)
    index = emit.NameIndex(info.symbols)
    index.count  # noqa: B018 - every name's count at once, not one search per function
    out = []
    for sym in chosen:
        offset = elf_file.vaddr_to_offset(sym.address)
        named = sym.source in ("symtab", "dynsym") and emit.name_site(sym, index) is not None
        out.append((f"0x{offset:x}" if offset is not None else "-", "name" if named else "address"))
    return out


def ns(args: argparse.Namespace, ctx: Context, out: TextIO) -> None:
    from ctrace import procfs, render
    from ctrace.resolvers import host

    pid = host.parse_pid(args.pid)
    if pid is None:
        raise UsageError(f"{args.pid!r} is not a PID", "give a process ID, e.g. 'ctrace ns 1'")
    status = procfs.read_status(pid, ctx.proc_root)
    data = render.ns_dict(pid, status, procfs.namespaces(pid, ctx.proc_root))
    data.update(_owner(pid, ctx))
    if args.output in ("json", "yaml"):
        render.data(data, args.output, out)
    else:
        render.ns_text(data, out)


def ps(args: argparse.Namespace, ctx: Context, out: TextIO) -> int:
    from ctrace import procfs, render
    from ctrace.resolvers import host, kubernetes, runtimes

    where = procfs.placements(ctx.proc_root)
    hidden = 0
    if args.container:
        procs = _members(args.container, ctx)
        if args.name:
            procs = [p for p in procs if p.pid in set(host.matching_pids(args.name, ctx))]
    else:
        pids = host.matching_pids(args.name, ctx) if args.name else procfs.pids(ctx.proc_root)
        found = [_quiet_process(pid, ctx) for pid in pids]
        hidden = found.count(HIDDEN)
        procs = runtimes.annotate([p for p in found if isinstance(p, tuple)], ctx, where)
    procs = kubernetes.annotate(procs, ctx, where)
    if not procs:
        raise _nothing_listed(args, ctx, hidden)
    details = _details(procs, ctx) if args.output != "text" else {}
    if args.output in ("json", "yaml"):
        render.data({"processes": [_ps_dict(p, details.get(p.pid)) for p in procs]}, args.output, out)
    else:
        render.ps_text(procs, out, details if args.output == "wide" else None)
    if hidden:
        import sys

        sys.stderr.write(f"warning: {hidden} processes are not listed: {_why_hidden()}\n")
    return 0


def _members(name: str, ctx: Context) -> list[Process]:
    """``ps --container NAME``; a prefix of several containers gets a hint ps can run
    (the resolver's suggests --all and --runtime, which are target's flags)."""
    from ctrace.resolvers import containers

    try:
        return containers.members(name, ctx)
    except UsageError as err:
        hits = _containers_named(name, ctx)
        if len(hits) < 2:
            raise
        full = hits[0].name or hits[0].id[:12]
        raise UsageError(
            err.message, f"give the full name or ID: '{shlex.join(['ctrace', 'ps', '--container', full])}'"
        ) from None


def _nothing_listed(args: argparse.Namespace, ctx: Context, hidden: int) -> CtraceError:
    """An empty table is an answer nobody can act on: say why it is empty, and what to run instead."""
    from ctrace.errors import EnvironmentProblem

    if hidden:
        return EnvironmentProblem(f"no process listed: {hidden} processes hidden: {_why_hidden()}")
    if args.container:
        return NotFound(
            f"container {args.container!r} runs no process named {args.name!r}",
            f"list its processes: 'ctrace ps --container {args.container}'",
        )
    if args.name and _is_container(args.name, ctx):
        return NotFound(
            f"no process is named {args.name!r}, but a container is",
            f"list its processes: 'ctrace ps --container {args.name}'",
        )
    return NotFound(f"no process named {args.name!r}", "list every process with 'ctrace ps'")


def _why_hidden() -> str:
    if os.geteuid() != 0:
        return "reading another user's process needs root (run ctrace as root)"
    return "permission denied reading their binary, even as root (a security module or another user namespace)"


def _is_container(name: str, ctx: Context) -> bool:
    return bool(_containers_named(name, ctx))


def _containers_named(name: str, ctx: Context) -> list[Container]:
    """Containers of every runtime that ``name`` names or prefixes (none where no runtime answers)."""
    from ctrace.resolvers import runtimes

    try:
        hits, _ = runtimes.find(name, ctx, runtimes.scan(None, ctx).monitors)
    except CtraceError:
        return []
    return [h.container for h in hits]


def _details(procs: Sequence[Process], ctx: Context) -> dict[int, dict[str, object]]:
    """User, start time and resident memory of each process (psutil), for -o wide and json."""
    import psutil

    psutil.PROCFS_PATH = ctx.proc_root
    out: dict[int, dict[str, object]] = {}
    for p in procs:
        try:
            proc = psutil.Process(p.pid)
            with proc.oneshot():
                out[p.pid] = {"user": proc.username(), "started": proc.create_time(), "rss": proc.memory_info().rss}
        except (psutil.Error, OSError, ValueError, IndexError):
            continue  # exited meanwhile, or a --proc-root psutil cannot parse: the table goes without
    return out


def _owner(pid: int, ctx: Context) -> dict[str, object]:
    """The container and pod of a PID, for ``ns`` (the reverse lookup)."""
    from ctrace import procfs, render
    from ctrace.resolvers import kubernetes, runtimes

    proc = _quiet_process(pid, ctx)
    if not isinstance(proc, tuple):
        return {"container": None, "pod": None}
    found = procfs.placement(pid, ctx.proc_root)
    where = {pid: found} if found.container_id else {}
    (proc,) = kubernetes.annotate(runtimes.annotate([proc], ctx, where), ctx, where)
    d = render.process_dict(proc)
    return {"container": d["container"], "pod": d["pod"]}


def completion(args: argparse.Namespace, out: TextIO) -> None:
    from ctrace import completion as comp

    out.write(comp.script(args.shell))


HIDDEN = "hidden"  # what _quiet_process returns for a process ctrace may not read


def _quiet_process(pid: int, ctx: Context) -> Process | str | None:
    """A user-space process, HIDDEN when reading it needs more privilege, or None for
    kernel threads and processes that exited."""
    from ctrace.errors import EnvironmentProblem
    from ctrace.resolvers import host

    try:
        return host.process(pid, ctx)
    except EnvironmentProblem:
        return HIDDEN
    except Exception:  # noqa: BLE001 - ps lists what it can read
        return None


def _ps_dict(p: Process, details: dict[str, object] | None) -> dict[str, object]:
    from ctrace import render

    d = render.process_dict(p)
    d["exe"] = p.exe
    d["deleted"] = p.deleted
    d["init"] = p.init
    d["container_pid"] = p.nspid[-1]  # the PID `docker top` does not show: the one inside the container
    d.update(details or {"user": None, "started": None, "rss": None})
    return d
