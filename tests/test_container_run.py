"""A container is one program, and ``--run --all`` takes every action (issue 22, items 2 and 3).

Real docker containers FROM scratch run tests/fixtures/src/tally.c, compiled here:
``tally MS CHILD_MS`` is two long-lived processes of one file (nginx's master and
worker), each calling serve(its MS) CALLS times per SIGUSR2, so arg0 names the process
and its latency lands in a known histogram bucket; ``tally MS churn`` is a prefork
server whose workers live 150 ms each. Every run is ``ctrace target ... --run
--duration`` under each bpftrace of the matrix: the test waits until the uprobe is in
place, signals the target and the decoys, and reads what ctrace printed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctrace.bpftrace.dialect import EXIT_DEFECTS
from tests.conftest import SRC, Bpftrace, Session, need, program_warnings, run
from tests.test_binding import armed, breakpoint_at, children, minor
from tests.test_docker import Docker, docker_answers

pytestmark = [pytest.mark.docker, pytest.mark.bpftrace]
CALLS = 5  # tally.c's CALLS
P = f"ctrace-22-{os.getpid()}-"
DURATION = 4  # seconds of --duration: bpftrace's compile and attach (under a second here) come out of it
COUNT = re.compile(r"^@calls\[(\d+), serve(?:, ([^\]]*))?\]: (\d+)$", re.M)
ARGS = re.compile(r"^pid=(\d+)(?: \(([^)]*)\))? serve arg0=(0x[0-9a-f]+) ", re.M)
HIST = re.compile(r"^@usecs\[(\d+), serve(?:, ([^\]]*))?\]: *$")
BUCKET = re.compile(r"^\[(\S+), (\S+)\)\s+(\d+) \|")
# serve(ms) sleeps ms milliseconds: bpftrace's power-of-two bucket (in microseconds) it lands in.
# Each sleep sits just above its bucket's floor: a late wake-up on a loaded machine (measured:
# 20 ms sleeps at 32+ ms) stays inside, and nothing can come out below the floor.
SHORT, LONG = 9, 33
BUCKETS = {SHORT: ("[8K, 16K)", 8192), LONG: ("[32K, 64K)", 32768)}


MEASURED: dict[str, dict[str, str]] = {}  # row -> bpftrace version -> what was measured


@pytest.fixture(scope="module", autouse=True)
def _write_report() -> Iterator[None]:
    """With CTRACE_MATRIX_REPORT=PATH the measured cells go to PATH.container.json and .md."""
    yield
    path = os.environ.get("CTRACE_MATRIX_REPORT")
    if not path or not MEASURED:
        return
    Path(f"{path}.container.json").write_text(json.dumps(MEASURED, indent=1) + "\n")
    versions = sorted({v for cells in MEASURED.values() for v in cells}, key=lambda v: tuple(map(int, v.split("."))))
    lines = ["| | " + " | ".join(f"bpftrace {v}" for v in versions) + " |", "|---" * (len(versions) + 1) + "|"]
    lines += [f"| {row} | " + " | ".join(cells.get(v, "-") for v in versions) + " |" for row, cells in MEASURED.items()]
    Path(f"{path}.container.md").write_text("\n".join(lines) + "\n")


def report(row: str, bt: Bpftrace, cell: str) -> None:
    MEASURED.setdefault(row, {})[minor(bt)] = cell


@dataclass(frozen=True)
class Containers:
    two: str  # tally SHORT LONG: the init calls serve(SHORT), its long-lived child serve(LONG)
    decoy: str  # the same image and command: must stay silent
    churn: str  # tally 1 churn: workers come and go
    replicas: tuple[str, str]  # tally SHORT and tally LONG, named P + "rep-1" / "rep-2"


@pytest.fixture(scope="module")
def containers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containers]:
    need(docker_answers(), "no docker daemon answers (make test starts one)")
    out = tmp_path_factory.mktemp("tally")
    exe = out / "tally"
    run(["gcc", "-O0", "-fno-omit-frame-pointer", "-static", "-o", str(exe), str(SRC / "tally.c")])
    dk = Docker(out)
    try:
        image = dk.rootfs(f"ctrace-22/tally:{os.getpid()}", {"/tally": exe}, {}, ["/tally"])
        got = Containers(f"{P}two", f"{P}decoy", f"{P}churn", (f"{P}rep-1", f"{P}rep-2"))
        for name, cmd in [
            (got.two, [str(SHORT), str(LONG)]),
            (got.decoy, [str(SHORT), str(LONG)]),
            (got.churn, ["1", "churn"]),
            (got.replicas[0], [str(SHORT)]),
            (got.replicas[1], [str(LONG)]),
        ]:
            dk.start(name, image, cmd=cmd)
        yield got
    finally:
        dk.cleanup()


def pid_of(name: str) -> int:
    return int(run(["docker", "inspect", "-f", "{{.State.Pid}}", name]).stdout)


def family(name: str) -> list[int]:
    """The container's init and its children (tally forks one, or its workers)."""
    init = pid_of(name)
    return [init, *children(init)]


@dataclass(frozen=True)
class Ran:
    code: int | None
    out: str
    err: str
    argv: list[str]


def ctrace_run(bt: Bpftrace, args: Sequence[str], poke: Callable[[], None], at: tuple[int, int]) -> Ran:
    """``ctrace target ARGS --run --duration`` under ``bt``; once the uprobe is in place
    at ``at`` (pid, address), ``poke`` the processes, then wait for the run to end.
    bpftrace 0.17 now and then fails to load its END program and prints no map
    (dialect.EXIT_DEFECTS, as tests/test_binding.py's test_event_printed_once): once more."""
    r = _run_once(bt, args, poke, at)
    return _run_once(bt, args, poke, at) if EXIT_DEFECTS.search(r.err) else r


def _run_once(bt: Bpftrace, args: Sequence[str], poke: Callable[[], None], at: tuple[int, int]) -> Ran:
    argv = [sys.executable, "-m", "ctrace", "target", *args, *bt.args, "--run", "--duration", str(DURATION)]
    session = Session(argv)
    try:
        began = time.monotonic()  # the breakpoint says the uprobe is in (-o json eats bpftrace's "Attaching")
        while not armed(*at):
            assert session.proc.poll() is None, f"ctrace ended before its uprobe was armed: {session.out} {session.err}"
            assert time.monotonic() - began < 60, f"no breakpoint at 0x{at[1]:x} of {at[0]}: {session.err}"
            time.sleep(0.1)
        time.sleep(0.3)  # BEGIN, which seeds the binding's maps, runs with the attachment
        poke()
        session.proc.wait(timeout=DURATION + 60)
    finally:
        out, err = session.stop()
    return Ran(session.proc.returncode, out, err, argv)


def usr2(*pids: int) -> Callable[[], None]:
    def poke() -> None:
        for pid in pids:
            os.kill(pid, signal.SIGUSR2)

    return poke


def counted(text: str) -> dict[int, tuple[int, str]]:
    """``@calls[pid, serve(, owner)]: n`` -> {pid: (n, owner)}; a PID keyed twice fails."""
    found: dict[int, tuple[int, str]] = {}
    for pid, owner, n in COUNT.findall(text):
        assert int(pid) not in found, text
        found[int(pid)] = (int(n), owner)
    return found


def args_by_pid(text: str) -> dict[int, list[tuple[str, int]]]:
    """``pid=N (owner) serve arg0=0x..`` lines -> {pid: [(owner, arg0), ...]}."""
    found: dict[int, list[tuple[str, int]]] = {}
    for pid, owner, arg0 in ARGS.findall(text):
        found.setdefault(int(pid), []).append((owner, int(arg0, 16)))
    return found


def histograms(text: str) -> dict[int, tuple[str, Counter[str]]]:
    """``@usecs[pid, serve(, owner)]:`` and its bucket lines -> {pid: (owner, bucket -> samples)}."""
    found: dict[int, tuple[str, Counter[str]]] = {}
    current: Counter[str] | None = None
    for line in text.splitlines():
        if m := HIST.match(line):
            assert int(m[1]) not in found, text
            current = Counter()
            found[int(m[1])] = (m[2] or "", current)
        elif current is not None and (b := BUCKET.match(line)):
            current[f"[{b[1]}, {b[2]})"] += int(b[3])
        elif not line.strip():
            current = None
    return found


def measured(seen: dict[int, tuple[int, str]], names: dict[str, int], decoys: Sequence[int]) -> str:
    """A report cell: each named PID's count, and the decoys' events."""
    shown = [f"{name} {seen.get(pid, (0, ''))[0]}/{CALLS}" for name, pid in names.items()]
    return ", ".join([*shown, f"decoy {sum(seen.get(d, (0, ''))[0] for d in decoys)}"])


def described(rows: dict[int, list[tuple[str, int]]], names: dict[str, int], decoys: Sequence[int]) -> str:
    shown = [
        f"{name} {len(rows.get(pid, []))} x arg0={sorted({a for _, a in rows.get(pid, [])})}"
        for name, pid in names.items()
    ]
    return ", ".join([*shown, f"decoy {sum(len(rows.get(d, [])) for d in decoys)}"])


def bucketed(hists: dict[int, tuple[str, Counter[str]]], names: dict[str, int], decoys: Sequence[int]) -> str:
    shown = []
    for name, pid in names.items():
        buckets = hists.get(pid, ("", Counter()))[1]
        shown.append(f"{name} " + " ".join(f"{b}: {n}" for b, n in sorted(buckets.items())))
    return ", ".join([*shown, f"decoy {sum(sum(hists[d][1].values()) for d in decoys if d in hists)}"])


def low(bucket: str) -> int:
    """A histogram bucket's floor in microseconds: ``[8K, 16K)`` -> 8192."""
    text = bucket[1:].split(",")[0]
    return int(text.rstrip("KM")) * {"K": 1024, "M": 1024 * 1024}.get(text[-1], 1)


def check_latency(hist: tuple[str, Counter[str]], ms: int, calls: int) -> None:
    """Every call counted once, none shorter than its sleep, and the sleep's bucket holding
    all but one (a late wake-up on a loaded machine)."""
    _, buckets = hist
    bucket, floor = BUCKETS[ms]
    assert sum(buckets.values()) == calls, buckets
    assert all(low(b) >= floor for b in buckets), (ms, buckets)
    assert buckets[bucket] >= calls - 1, (ms, buckets)


def clean(r: Ran) -> None:
    assert r.code == 0, (r.code, r.out, r.err)
    assert not program_warnings(r.err, ["bpftrace"]), r.err
    assert "exited while it was traced" not in r.err, r.err


@pytest.mark.parametrize("action", ["count", "args", "latency"])
def test_container_of_two_processes_is_one_program(bpftrace: Bpftrace, containers: Containers, action: str) -> None:
    """Both long-lived processes of one file, in one run with no --all; the decoy (same image)
    stays at zero."""
    init, child = family(containers.two)
    decoys = family(containers.decoy)
    what = (containers.two, "--func", "serve", "--action", action)
    at = init, breakpoint_at(init, (f"pid:{init}", "--func", "serve"))
    r = ctrace_run(bpftrace, what, usr2(init, child, *decoys), at)
    clean(r)
    # The file's other users named before the run are the decoy's (and other containers'),
    # never the container's own processes: they are the target.
    shared = re.findall(r"^ctrace: warning: pid (\d+): /tally is the same file as process\(es\) ([\d, ]+)", r.err, re.M)
    assert sorted(int(pid) for pid, _ in shared) == sorted([init, child]), r.err
    assert all({init, child}.isdisjoint(int(p) for p in others.split(", ")) for _, others in shared), r.err
    assert f"ctrace: PID {init} = docker container {containers.two}\n" in r.err
    assert f"ctrace: PID {child} = docker container {containers.two}\n" in r.err
    spaces = re.findall(r"^ctrace: bound to every process of .*$", r.err, re.M)
    assert spaces == [
        f"ctrace: bound to every process of docker container {containers.two} (mount namespace "
        f"{os.stat(f'/proc/{init}/ns/mnt').st_ino}: PIDs {init}, {child} and any started later); "
        f"it stops when PID {init} exits"  # the container ends with its init
    ], r.err
    row = f"container of two processes, {action}"
    if action == "count":
        seen = counted(r.out)
        report(row, bpftrace, measured(seen, {"init": init, "child": child}, decoys))
        assert seen == {init: (CALLS, ""), child: (CALLS, "")}, (r.out, r.err)
    elif action == "args":
        rows = args_by_pid(r.out)
        report(row, bpftrace, described(rows, {"init": init, "child": child}, decoys))
        assert rows == {init: [("", SHORT)] * CALLS, child: [("", LONG)] * CALLS}, (r.out, r.err)
    else:
        hists = histograms(r.out)
        report(row, bpftrace, bucketed(hists, {"init": init, "child": child}, decoys))
        assert set(hists) == {init, child}, (r.out, r.err)
        check_latency(hists[init], SHORT, CALLS)
        check_latency(hists[child], LONG, CALLS)


def test_container_of_two_processes_as_json(bpftrace: Bpftrace, containers: Containers) -> None:
    """``--run -o json`` runs the same one program: one "aggregate" row per PID, each named
    by its container; the legend states the one program's binding."""
    init, child = family(containers.two)
    decoys = family(containers.decoy)
    what = (containers.two, "--func", "serve", "--action", "count", "-o", "json")
    at = init, breakpoint_at(init, (f"pid:{init}", "--func", "serve"))
    r = ctrace_run(bpftrace, what, usr2(init, child, *decoys), at)
    clean(r)
    msgs = [json.loads(line) for line in r.out.splitlines()]
    started, end = msgs[0], msgs[-1]
    assert started["type"] == "started" and sorted(started["pids"]) == sorted([init, child]), r.out
    assert [line for line in started["legend"] if line.startswith("bound to")] == [
        f"bound to every process of docker container {containers.two} (mount namespace "
        f"{os.stat(f'/proc/{init}/ns/mnt').st_ino}: PIDs {init}, {child} and any started later); "
        f"it stops when PID {init} exits"
    ], r.out
    (agg,) = [m for m in msgs if m["type"] == "aggregate"]
    rows = sorted((row["pid"], row["func"], row["count"], row["container"]) for row in agg["rows"])
    calls = {pid: n for pid, _, n, _ in rows}
    report(
        "container of two processes, count, -o json",
        bpftrace,
        f"init {calls.get(init, 0)}/{CALLS}, child {calls.get(child, 0)}/{CALLS}",
    )
    assert rows == sorted((pid, "serve", CALLS, containers.two) for pid in (init, child)), r.out
    assert end == {"type": "end", "code": 0, "reason": "ended"}, r.out


def test_prefork_container_whose_workers_come_and_go(bpftrace: Bpftrace, containers: Containers) -> None:
    """A worker exists when ctrace resolves (one is always alive) and is gone when bpftrace
    opens the file: the run attaches through the init's path, counts every worker once,
    and says nothing of workers that exited."""
    init = pid_of(containers.churn)
    decoys = family(containers.decoy)
    what = (containers.churn, "--func", "serve", "--action", "count")
    at = init, breakpoint_at(init, (f"pid:{init}", "--func", "serve"))
    r = ctrace_run(bpftrace, what, usr2(*decoys), at)
    clean(r)
    # The processes ctrace resolved and read (the binding's statement lists them): the init
    # and a worker that is gone by now (one may even exit before its probe is made, and
    # then is no target of the legend: the init's own program is run, the same binding).
    (listed,) = re.findall(r"^ctrace: bound to every process of .*: PIDs ([\d, ]+) and any started later", r.err, re.M)
    resolved = [int(p) for p in listed.split(", ")]
    assert init in resolved and len(resolved) >= 2, r.err
    seen = counted(r.out)
    full = sum(n == CALLS for n, _ in seen.values())
    cell = f"{len(resolved) - 1} worker(s) at resolve; {len(seen)} counted, {full} with {CALLS}/{CALLS}"
    report("prefork workers come and go, count", bpftrace, f"{cell}, max {max(n for n, _ in seen.values())}")
    assert not set(seen) & {init, *decoys}, r.out  # the init never calls serve; the decoy stays silent
    # A worker forked before attach or killed by the end may show fewer; none shows more.
    assert all(n <= CALLS for n, _ in seen.values()), (r.out, r.err)
    assert full >= 10, r.out  # ten workers a second


@pytest.mark.parametrize("action", ["count", "args", "latency"])
def test_all_replicas_each_event_once(bpftrace: Bpftrace, containers: Containers, action: str) -> None:
    """``--all`` over a prefix matching two replicas of one image: one attachment of the
    shared file, each call counted once, keyed by PID and container; the decoy stays silent."""
    a, b = containers.replicas
    pa, pb = pid_of(a), pid_of(b)
    decoys = family(containers.decoy)
    what = (f"{P}rep", "--all", "--func", "serve", "--action", action)
    at = pa, breakpoint_at(pa, (f"pid:{pa}", "--func", "serve"))
    r = ctrace_run(bpftrace, what, usr2(pa, pb, *decoys), at)
    clean(r)
    owner = {pa: f"docker container {a}", pb: f"docker container {b}"}
    row, names = f"--all over two replicas, {action}", {"rep-1": pa, "rep-2": pb}
    if action == "count":
        seen = counted(r.out)
        report(row, bpftrace, measured(seen, names, decoys))
        assert seen == {pa: (CALLS, owner[pa]), pb: (CALLS, owner[pb])}, (r.out, r.err)
    elif action == "args":
        rows = args_by_pid(r.out)
        report(row, bpftrace, described(rows, names, decoys))
        assert rows == {pa: [(owner[pa], SHORT)] * CALLS, pb: [(owner[pb], LONG)] * CALLS}, (r.out, r.err)
    else:
        hists = histograms(r.out)
        report(row, bpftrace, bucketed(hists, names, decoys))
        assert {pid: o for pid, (o, _) in hists.items()} == owner, (r.out, r.err)
        check_latency(hists[pa], SHORT, CALLS)
        check_latency(hists[pb], LONG, CALLS)


STACK_HEAD = re.compile(r"^pid=(\d+) \(([^)]*)\)$", re.M)  # --action stack: each event's first line
NAMED = re.compile(r"^\s+(\d+)\s+serve\s+PID (\d+) \(tally, ([^)]*)\)$", re.M)  # run/stacks.py's report


@pytest.mark.parametrize("action", ["stack", "stacks"])
def test_all_replicas_stacks_each_event_once(bpftrace: Bpftrace, containers: Containers, action: str) -> None:
    """The stack actions over the same replicas: each call one stack, named by PID and container."""
    a, b = containers.replicas
    pa, pb = pid_of(a), pid_of(b)
    decoys = family(containers.decoy)
    what = (f"{P}rep", "--all", "--func", "serve", "--action", action)
    at = pa, breakpoint_at(pa, (f"pid:{pa}", "--func", "serve"))
    r = ctrace_run(bpftrace, what, usr2(pa, pb, *decoys), at)
    clean(r)
    seen: Counter[tuple[int, str]] = Counter()
    if action == "stack":
        seen.update((int(pid), who) for pid, who in STACK_HEAD.findall(r.out))
    else:
        for n, pid, who in NAMED.findall(r.out):
            seen[(int(pid), who)] += int(n)
    owner = {pa: f"docker container {a}", pb: f"docker container {b}"}
    cells = [f"{name} {seen[(pid, owner[pid])]}/{CALLS}" for name, pid in (("rep-1", pa), ("rep-2", pb))]
    others = sum(n for (pid, _), n in seen.items() if pid not in owner)
    report(f"--all over two replicas, {action}", bpftrace, ", ".join([*cells, f"other PIDs {others}"]))
    assert seen == Counter({(pa, owner[pa]): CALLS, (pb, owner[pb]): CALLS}), (r.out, r.err)


def test_all_attaches_a_shared_image_file_once(containers: Containers) -> None:
    """The printed --all program has one uprobe on serve for the two replicas: their files
    are one lower-layer inode behind two overlay mounts (two st_dev)."""
    a, b = containers.replicas
    pa, pb = pid_of(a), pid_of(b)
    paths = [Path(f"/proc/{p}/root/tally") for p in (pa, pb)]
    assert paths[0].stat().st_dev != paths[1].stat().st_dev  # what (dev, inode) would have split
    from ctrace.bpftrace import binding

    assert binding.file_key(str(paths[0])) == binding.file_key(str(paths[1]))
