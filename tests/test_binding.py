"""Binding: a printed program fires on its target, every process of it, and nothing else,
under every bpftrace version (0.17 on the host, 0.23 and 0.27 from chroots).

Each test runs ``ctrace target ... --run`` with the version's bpftrace first on PATH,
drives the target and the decoys with signals after bpftrace attached, and counts the
events by PID. tests/fixtures/src/prefork.c: SIGUSR1 forks a worker that calls serve()
CALLS times; SIGUSR2 makes the process itself call serve() CALLS times.

With CTRACE_MATRIX_REPORT=PATH the measured cells go to PATH.binding.json and
PATH.binding.md, rows of the closing table of issue 13.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctrace.bpftrace import binding
from ctrace.bpftrace.dialect import EXIT_DEFECTS
from ctrace.proc import procfs
from tests.conftest import SRC, Bpftrace, Session, ctrace, need, program_warnings, run
from tests.test_docker import Docker, docker_answers

pytestmark = [pytest.mark.bpftrace]
CALLS = 5
ET_DYN = 3  # e_type of a position-independent executable or library
COUNT_KEY = re.compile(r"^@calls\[(\d+), (.*)\]: (\d+)$", re.M)  # @calls[pid, "label"]
TAG = f"ctrace-13b-{os.getpid()}"


def minor(bt: Bpftrace) -> str:
    return ".".join(bt.version.split(".")[:2])


ROWS = ("replica decoy", "library decoy", "child forked after attach", "event printed once")
MEASURED: dict[str, dict[str, str]] = {}  # row -> bpftrace version -> what was measured


def report(row: str, version: str, cell: str) -> None:
    """One measured cell of issue 13's closing table (written at the end of the module)."""
    MEASURED.setdefault(row, {})[version] = cell


@pytest.fixture(scope="module", autouse=True)
def _write_report() -> Iterator[None]:
    """With CTRACE_MATRIX_REPORT=PATH, the cells go to PATH.binding.json and PATH.binding.md
    (PATH itself is tests/test_matrix.py's)."""
    yield
    path = os.environ.get("CTRACE_MATRIX_REPORT")
    if not path or not MEASURED:
        return
    Path(f"{path}.binding.json").write_text(json.dumps(MEASURED, indent=1) + "\n")
    versions = sorted({v for cells in MEASURED.values() for v in cells}, key=lambda v: tuple(map(int, v.split("."))))
    lines = ["| | " + " | ".join(f"bpftrace {v}" for v in versions) + " |", "|---" * (len(versions) + 1) + "|"]
    for row in ROWS:
        cells = MEASURED.get(row, {})
        lines.append(f"| {row} | " + " | ".join(cells.get(v, "-") for v in versions) + " |")
    Path(f"{path}.binding.md").write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class Prefork:
    dynamic: Path
    static: Path


@pytest.fixture(scope="session")
def prefork(tmp_path_factory: pytest.TempPathFactory) -> Prefork:
    need(shutil.which("gcc") is not None, "gcc is not installed")
    out = tmp_path_factory.mktemp("prefork")
    # A name of its own, so a process-name target matches only this session's copies.
    dynamic, static = out / f"pf{os.getpid()}", out / "prefork-static"
    cc = ["gcc", "-O0", "-fno-omit-frame-pointer", "-o"]
    run([*cc, str(dynamic), str(SRC / "prefork.c")])
    run([*cc, str(static), "-static", str(SRC / "prefork.c")])
    return Prefork(dynamic, static)


class Started:
    """Processes a test starts; all killed, and their workers too, at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, path: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen([str(path)], stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready"), f"{path} did not start"
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            for child in children(proc.pid):
                _kill(child)
            proc.kill()
            proc.wait()


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def started() -> Iterator[Started]:
    s = Started()
    yield s
    s.stop()


@dataclass(frozen=True)
class Trace:
    out: str
    err: str
    code: int | None
    argv: list[str]


def breakpoint_at(pid: int, args: Sequence[str]) -> int:
    """Where, in ``pid``'s memory, the function ``ctrace target ARGS`` probes starts."""
    res = ctrace("target", *args, "-o", "json")
    assert res.code == 0, res.err
    t = next(t for t in res.json()["targets"] if t["pid"] == pid)
    vaddr, shown = t["probes"][0]["address"], t["binary"]["path"]
    with open(t["binary"]["host_path"], "rb") as f:
        if int.from_bytes(f.read(18)[16:18], "little") != ET_DYN:
            return int(vaddr)  # a fixed-address executable
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5] == shown and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16) + int(vaddr)
    raise AssertionError(f"{shown} is not mapped in {pid}")


def armed(pid: int, address: int) -> bool:
    """Whether the kernel has put its uprobe breakpoint (int3) at ``address`` of ``pid``."""
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(address)
        return mem.read(1) == b"\xcc"


def trace(argv: Sequence[str], poke: Callable[[], None], at: tuple[int, int], settle: float = 1.0) -> Trace:
    """Run ``argv`` until its uprobe is in place at ``at`` (pid, address): bpftrace says
    "Attaching" before it attaches, and on a loaded machine the uprobe lands seconds later.
    Then ``poke`` the targets, and Ctrl-C it."""
    session = Session(argv)
    try:
        assert session.wait_attached(), f"bpftrace never attached: {session.out} {session.err}"
        deadline = time.monotonic() + 30
        while not armed(*at):
            assert time.monotonic() < deadline, f"no breakpoint at 0x{at[1]:x} of {at[0]}: {session.err}"
            time.sleep(0.1)
        time.sleep(0.3)  # BEGIN, which seeds the binding's maps, runs with the attachment
        poke()
        time.sleep(settle)
    finally:
        out, err = session.stop()
    return Trace(out, err, session.proc.returncode, list(argv))


def counts(text: str) -> Counter[int]:
    """Events per PID from ``--action count`` output (keys end with the PID)."""
    found: Counter[int] = Counter()
    for pid, _, n in COUNT_KEY.findall(text):
        found[int(pid)] += int(n)
    return found


def ctrace_run(bt: Bpftrace, *args: str) -> list[str]:
    return [sys.executable, "-m", "ctrace", "target", *args, *bt.args, "--run"]


def warnings(t: Trace) -> list[str]:
    """bpftrace's warnings about the program (not about the machine)."""
    return program_warnings(t.err, t.argv)


def test_child_forked_after_attach(bpftrace: Bpftrace, prefork: Prefork, started: Started) -> None:
    """A process target admits the workers it forks after bpftrace attached, with their PID."""
    parent = started.start(prefork.dynamic)
    assert parent.stdout is not None

    def poke() -> None:
        os.kill(parent.pid, signal.SIGUSR1)

    what = (f"pid:{parent.pid}", "--func", "serve")
    t = trace(ctrace_run(bpftrace, *what, "--action", "count"), poke, (parent.pid, breakpoint_at(parent.pid, what)))
    worker = int(parent.stdout.readline().split()[1])
    seen = counts(t.out)
    report("child forked after attach", minor(bpftrace), f"worker {seen[worker]}/{CALLS} events")
    assert seen == Counter({worker: CALLS}), (t.out, t.err)
    assert not warnings(t)
    # The legend before the events: who each PID is, and what the program admits.
    assert f"ctrace: PID {parent.pid} = host process\n" in t.err
    assert (
        f"ctrace: bound to PID {parent.pid} and the children it forks later; it stops when PID {parent.pid} exits\n"
        in t.err
    )


def test_library_decoy(bpftrace: Bpftrace, prefork: Prefork, started: Started) -> None:
    """``--lib libc --func malloc`` on one process: no event from any other user of libc."""
    target, decoy = started.start(prefork.dynamic), started.start(prefork.dynamic)

    def poke() -> None:
        os.kill(target.pid, signal.SIGUSR2)
        os.kill(decoy.pid, signal.SIGUSR2)

    what = (f"pid:{target.pid}", "--lib", "libc", "--func", "malloc")
    at = target.pid, breakpoint_at(target.pid, what)
    t = trace(ctrace_run(bpftrace, *what, "--action", "count"), poke, at)
    seen = counts(t.out)
    others = sorted(set(seen) - {target.pid})
    report("library decoy", minor(bpftrace), f"target {seen[target.pid]} mallocs, {len(others)} other PIDs")
    assert seen[target.pid] >= CALLS, (t.out, t.err)
    assert not others, f"events from other processes: {others}"
    assert not warnings(t)


def test_event_printed_once(bpftrace: Bpftrace, prefork: Prefork, started: Started) -> None:
    """``--run --all`` over two processes of one file: each call prints one stack, not one per PID."""
    a, b = started.start(prefork.dynamic), started.start(prefork.dynamic)

    def poke() -> None:
        os.kill(a.pid, signal.SIGUSR2)
        os.kill(b.pid, signal.SIGUSR2)

    what = (prefork.dynamic.name, "--func", "serve")
    at = b.pid, breakpoint_at(b.pid, (f"pid:{b.pid}", *what[1:]))
    t = trace([*ctrace_run(bpftrace, *what), "--all", "--action", "stack"], poke, at, settle=1.5)
    if EXIT_DEFECTS.search(t.err):  # bpftrace 0.17's own failure ("Error loading program: END"): once more
        t = trace([*ctrace_run(bpftrace, *what), "--all", "--action", "stack"], poke, at, settle=1.5)
    stacks = len(re.findall(r"^\s*serve\+\d+$", t.out, re.M))
    by_pid = Counter(int(p) for p in re.findall(r"^pid=(\d+)$", t.out, re.M))  # each event's header
    report("event printed once", minor(bpftrace), f"{stacks} stacks for {2 * CALLS} calls")
    assert stacks == 2 * CALLS, (t.out, t.err)
    assert by_pid == Counter({a.pid: CALLS, b.pid: CALLS}), t.out
    assert not warnings(t)


@pytest.fixture(scope="session")
def replicas(prefork: Prefork, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two containers of one image, FROM scratch: the target and its replica."""
    need(docker_answers(), "no docker daemon answers (make test starts one)")
    dk = Docker(tmp_path_factory.mktemp("docker"))
    try:
        image = dk.rootfs(f"{TAG}/prefork:test", {"/prefork": prefork.static}, {}, ["/prefork"])
        names = (f"{TAG}-a", f"{TAG}-b")
        for name in names:
            dk.start(name, image)
        yield names
    finally:
        dk.cleanup()


def test_replica_decoy(bpftrace: Bpftrace, replicas: tuple[str, str]) -> None:
    """A container target: its process and the worker it forks after attach fire; the
    replica (same image, same file) stays silent."""
    a, b = replicas
    pid_a, pid_b = (int(run(["docker", "inspect", "-f", "{{.State.Pid}}", n]).stdout) for n in replicas)

    def poke() -> None:
        for name in replicas:
            run(["docker", "kill", "-s", "USR2", name])
            run(["docker", "kill", "-s", "USR1", name])

    at = pid_a, breakpoint_at(pid_a, (a, "--func", "serve"))
    t = trace(ctrace_run(bpftrace, a, "--func", "serve", "--action", "count"), poke, at, settle=1.5)
    seen = counts(t.out)
    in_a = {pid_a, *children(pid_a)} | set(seen) - {pid_b, *children(pid_b)}
    from_b = sum(n for pid, n in seen.items() if pid not in in_a)
    workers = {pid: n for pid, n in seen.items() if pid != pid_a}
    report(
        "replica decoy",
        minor(bpftrace),
        f"B: {from_b} events; A: {seen[pid_a]}/{CALLS}, its new worker: {sum(workers.values())}/{CALLS}",
    )
    assert from_b == 0, (t.out, t.err)
    assert seen[pid_a] == CALLS and list(workers.values()) == [CALLS], (t.out, t.err)
    assert not warnings(t)
    assert f"ctrace: PID {pid_a} = docker container {a}\n" in t.err
    assert f"ctrace: bound to every process of docker container {a} (mount namespace " in t.err


def test_binding_program_shape() -> None:
    """One BEGIN and one END whatever the scopes (bpftrace 0.17 refuses a second)."""
    both = [
        binding.Scope(binding.CONTAINER, (binding.Member(10, 7),), "docker container a", (4026532000,)),
        binding.Scope(binding.PROCESSES, (binding.Member(20), binding.Member(21))),
    ]
    b = binding.bind(both)
    text = binding.program(b, f"uprobe:/bin/x:f /{binding.guard(b, '@start[tid]')}/ {{ }}", end=["clear(@start);"])
    assert text.count("BEGIN") == 1 and text.count("END") == 1
    # Two owners (a container, host processes): each seeded with its number, named in a map.
    assert "@ctrace_mntns[4026532000] = 1;" in text and "@ctrace_pids[20] = 2; @ctrace_pids[21] = 2;" in text
    assert '@ctrace_names[1] = "docker container a"; @ctrace_names[2] = "host process";' in text
    assert "@ctrace_pids[args->child_pid] = @ctrace_pids[pid];" in text  # a child keeps its parent's
    assert b.owner == "@ctrace_names[@ctrace_mntns[curtask->nsproxy->mnt_ns->ns.inum] + @ctrace_pids[pid]]"
    one = binding.bind(both[1:])  # one owner: the legend names it, the events need not
    assert (one.owner, one.begin) == ("", ("@ctrace_pids[20] = 1;", "@ctrace_pids[21] = 1;"))
    assert "@ctrace_pids[args->child_pid] = 1;" in one.blocks[0]
    assert "@ctrace_pids[10]" not in text  # the container is bound by its namespace
    assert "(@ctrace_mntns[curtask->nsproxy->mnt_ns->ns.inum] || @ctrace_pids[pid]) && @start[tid]" in text


def test_one_attachment_per_file_and_function(prefork: Prefork, tmp_path: Path) -> None:
    """Two paths to one file are one attachment per function, through the init's path first;
    another function is another; a path that no longer opens (its process exited) is left out."""
    from ctrace.model import Binary, Probe, Process, Target
    from ctrace.plan import combined

    alias = tmp_path / "alias"
    alias.symlink_to(prefork.dynamic)

    def target(pid: int, path: Path, symbols: Sequence[str], init: bool = False) -> Target:
        proc = Process(pid, (pid,), "pf", str(path), init=init)
        probes = tuple(Probe(s, 0, (), "name", points=(f"uprobe:{path}:{s}",), path=str(path)) for s in symbols)
        return Target(proc, Binary(str(path), str(path), None, None, False, "c"), probes)

    worker = target(2, alias, ("serve", "main"))
    init = target(1, prefork.dynamic, ("serve",), init=True)
    gone = target(3, tmp_path / "gone", ("other",))
    got = [(u.target.process.pid, u.probe.symbol) for u in combined.units([worker, gone, init])]
    assert got == [(1, "serve"), (2, "main")]


def test_scopes_from_mount_namespaces(prefork: Prefork, started: Started) -> None:
    """A container is bound by its own mount namespace; one that shares the host's is bound
    as its processes; processes of a container the target does not name stay processes."""
    need(shutil.which("unshare") is not None and os.geteuid() == 0, "unshare -m needs root")
    from ctrace.model import Container, Process

    own = subprocess.Popen(["unshare", "-m", str(prefork.dynamic)], stdout=subprocess.PIPE, text=True)
    started.procs.append(own)  # unshare execs the program: same PID
    assert own.stdout is not None and own.stdout.readline().startswith("ready")
    host = started.start(prefork.dynamic)

    def proc(pid: int, cid: str) -> Process:
        return Process(pid, (pid,), "pf", str(prefork.dynamic), container=Container(cid, cid, "img", "docker"))

    ns = procfs.mount_ns(own.pid)
    assert ns is not None and ns != procfs.mount_ns(host.pid)
    got = binding.scopes([proc(own.pid, "c1"), proc(host.pid, "c2")], ["c1", "c2"], btf=True)
    assert [(s.kind, s.mnt_ns) for s in got] == [(binding.CONTAINER, (ns,)), (binding.CONTAINER, ())]
    assert binding.scopes([proc(own.pid, "c1")], [], btf=True)[0].kind == binding.PROCESSES
    assert binding.scopes([proc(own.pid, "c1")], ["c1"], btf=False)[0].mnt_ns == ()
    b = binding.bind(got)
    # Two containers: each seeded with its own number, which names it (binding.owner).
    assert f"@ctrace_mntns[{ns}] = 1;" in b.begin and f"@ctrace_pids[{host.pid}] = 2;" in b.begin


def test_which_targets_name_a_whole_container() -> None:
    from ctrace.model import Container, Pod, Process

    web = Container("0123456789abcdef" * 4, "web-1", "img", "docker")
    proc = Process(10, (10, 1), "nginx", "/usr/sbin/nginx", runtime="docker", container=web, init=True)
    assert binding.named_containers("web-1", None, [proc]) == [web.id]
    assert binding.named_containers("web", None, [proc]) == [web.id]  # a name prefix, as docker.select
    assert binding.named_containers("0123456789ab", None, [proc]) == [web.id]
    for target in ("nginx", "pid:10", "10"):  # a process, not its container
        assert binding.named_containers(target, None, [proc]) == [], target
    assert binding.named_containers("web-1", "host", [proc]) == []  # --runtime host: processes
    pod = proc._replace(pod=Pod("ns", "web-7d9", "uid", "nginx", "node"))
    assert binding.named_containers("", None, [pod]) == [web.id]  # -l SELECTOR: pods are whole
    assert binding.legend([pod, proc]) == [
        "PID 10 = docker container nginx (pod ns/web-7d9)",
        "PID 10 = docker container web-1",
    ]


def test_what_ends_the_program_and_what_is_said() -> None:
    """A program on one process stops with it; on a container, only with its init."""
    one = binding.Scope(binding.PROCESSES, (binding.Member(7),))
    assert "/tid == 7/ { exit(); }" in " ".join(binding.bind([one]).blocks)
    worker = binding.Scope(binding.CONTAINER, (binding.Member(8, 5),), "docker container w", (5,))
    init = worker._replace(members=(binding.Member(9, 5, init=True),))
    assert not any("exit()" in b for b in binding.bind([worker]).blocks)
    assert "/tid == 9/ { exit(); }" in " ".join(binding.bind([init]).blocks)
    two = binding.Scope(binding.PROCESSES, (binding.Member(7), binding.Member(8)))
    assert binding.bind([two]).statement == "bound to PID 7, 8 and the children they fork later"

    class Old:
        pid_filters_uprobes = False

        def delete(self, element: str) -> str:
            return f"delete({element});"

    pinned = binding.bind([one], Old(), pinned=7).statement
    assert "; -p 7 only names the path" in pinned
    new = binding.bind([one], _New(), 7)
    assert "limits this bpftrace to PID 7" in new.statement
    assert "$gone = delete(@ctrace_pids[tid]);" in " ".join(new.blocks)


class _New:
    pid_filters_uprobes = True

    def delete(self, element: str) -> str:
        return f"$gone = delete({element});"
