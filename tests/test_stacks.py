"""--run's aggregated stacks: counted in the kernel, named by ctrace, folded, drawn.

Known quantities: stack_paths.c calls f() 30 times through path_a and 10 times
through path_b, and its child calls it once and exits at once. Env vars keep what
the closing note shows: CTRACE_CHILD_STACK, CTRACE_GO_STACK (text files) and
CTRACE_FLAMEGRAPH_SCREENSHOT (PNG).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrace.run import flame, runner
from ctrace.run import stacks as named
from tests.conftest import (
    HOSTILE,
    PWNED,
    ROOT,
    SRC,
    Bpftrace,
    Built,
    Processes,
    ctrace,
    need,
    need_bpftrace,
    program_warnings,
    run,
)
from tests.test_flame import _browser, _check_nesting, _chromium, _frames

pytestmark = pytest.mark.bpftrace


def _keep(env: str, text: str) -> None:
    if os.environ.get(env):
        Path(os.environ[env]).write_text(text)


@pytest.fixture(scope="module")
def paths_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A name of its own (comm keeps 15 characters), so the target is these processes only.
    out = tmp_path_factory.mktemp("paths") / f"sp-{os.getpid()}"
    run(["gcc", "-O0", "-fno-omit-frame-pointer", "-o", str(out), str(SRC / "stack_paths.c")])
    return out


def _child(pid: int) -> int:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.05)
    raise AssertionError("the fixture did not fork")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [
                int(k)
                for t in os.listdir(f"/proc/{p}/task")
                for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()
            ]
        except OSError:
            continue
        out += kids
        todo += kids
    return out


def _perf_events(pids: list[int]) -> int:
    n = 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                n += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]"
            except OSError:
                pass
    return n


def wait_attached(pid: int, timeout: float = 30) -> None:
    """Until the bpftrace under ``pid`` holds its probes: its perf events, counted till they stop
    growing. "Attaching N probes" comes before the attaching (0.17), "Attached" late on stderr (0.27)."""
    deadline = time.monotonic() + timeout
    last, steady = -1, 0
    while time.monotonic() < deadline:
        n = _perf_events(_descendants(pid))
        steady = steady + 1 if n == last and n > 0 else 0
        if steady >= 4:
            return
        last = n
        time.sleep(0.25)
    raise AssertionError("bpftrace did not attach")


def _run_until_attached(args: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctrace", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("Attach"), line + (proc.stderr.read() if proc.stderr else "")
    wait_attached(proc.pid)
    return proc


@pytest.fixture
def family(paths_binary: Path, processes: Processes) -> Iterator[tuple[int, int]]:
    """The fixture's parent and child PIDs; the child is killed if a test left it waiting."""
    parent = processes.start(paths_binary)
    child = _child(parent.pid)
    yield parent.pid, child
    parent.kill()
    parent.wait()
    try:
        os.kill(child, signal.SIGKILL)  # the parent ignores SIGCHLD: the kernel reaps it
    except ProcessLookupError:
        pass


def test_a_child_forked_after_attach_is_named_after_it_exited(paths_binary: Path, processes: Processes) -> None:
    """The binding follows forks; the child is gone before ctrace ever reads its /proc,
    and is named through its parent's mappings (a fork copies them)."""
    need_bpftrace()
    parent = processes.start(paths_binary, "late")
    first = _child(parent.pid)
    try:
        args = ["target", f"pid:{parent.pid}", "--func", "f", "--run", "--duration", "4"]
        proc = _run_until_attached(args)
        os.kill(parent.pid, signal.SIGUSR1)
        out, err = proc.communicate(timeout=30)
    finally:
        os.kill(first, signal.SIGKILL)
        parent.kill()  # this file's other tests find the fixture by name: leave none running
        parent.wait()
    assert proc.returncode == 0, err
    (block,) = [b for b in out.split("\n\n") if "via_late_child" in b]
    head, *frames = block.splitlines()
    late = int(head.split("PID ")[1].split()[0])
    assert late not in (parent.pid, first) and not Path(f"/proc/{late}").exists()
    assert head.split()[:2] == ["1", "f"] and f"forked from the process of PID {parent.pid}" in head
    assert [f.split()[0].split("+")[0] for f in frames[:4]] == ["f", "via_late_child", "main", "__libc_start_call_main"]
    _keep("CTRACE_LATE_CHILD_STACK", out)


def test_counts_per_path_and_pid_and_a_child_named_after_exit(
    paths_binary: Path, family: tuple[int, int], tmp_path: Path
) -> None:
    need_bpftrace()
    parent, child = family
    folded, svg = tmp_path / "out.folded", tmp_path / "out.svg"
    args = ["target", paths_binary.name, "--func", "f", "--all", "--run", "--duration", "3"]
    proc = _run_until_attached([*args, "--folded", str(folded), "--flamegraph", str(svg)])
    os.kill(child, signal.SIGUSR1)
    os.kill(parent, signal.SIGUSR1)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not Path(f"/proc/{child}").exists(), "the child must be gone before ctrace names its stack"
    comm = paths_binary.name
    libc = "__libc_start_call_main"
    assert flame.parse_folded(folded.read_text()) == {
        (f"{comm}-{parent}", libc, "main", "path_a", "mid", "f"): 30,
        (f"{comm}-{parent}", libc, "main", "path_b", "mid", "f"): 10,
        (f"{comm}-{child}", libc, "main", "via_child", "f"): 1,
    }
    assert f"30  f  PID {parent} ({comm}, host)" in out
    block = out[out.index(f"1  f  PID {child}") :]
    assert block.split("\n")[1:3] == [f"          f+0x0  ({comm})", f"          via_child+0x15  ({comm})"]
    _keep("CTRACE_CHILD_STACK", out)
    _check_graph(svg, tmp_path)


def _check_graph(svg: Path, tmp_path: Path) -> None:
    """The run's own flame graph in the browser: nested, named, titled; the screenshot kept."""
    root = ET.fromstring(svg.read_text())
    title = root.find(".//{http://www.w3.org/2000/svg}text[@id='title']")
    assert title is not None and "stacks of f in" in (title.text or "")
    _chromium()
    frames = _frames(ET.fromstring(_browser(["--dump-dom"], f"{svg.as_uri()}?s=path_a", tmp_path)))
    _check_nesting(frames)
    assert {str(f["name"]) for f in frames if f["fill"] == "rgb(230,0,230)"} == {"path_a"}
    shot = os.environ.get("CTRACE_FLAMEGRAPH_SCREENSHOT") or str(tmp_path / "flame.png")
    size = f"--window-size={flame.WIDTH},{root.get('height')}"
    _browser(["--hide-scrollbars", size, f"--screenshot={shot}"], f"{svg.as_uri()}?s=path_a", tmp_path)
    assert Path(shot).read_bytes()[:4] == b"\x89PNG"


def _go_stacks(built: Built, processes: Processes, name: str, tmp_path: Path) -> tuple[dict[tuple[str, ...], int], str]:
    proc = processes.start(built[name])
    folded = tmp_path / f"{name}.folded"
    res = ctrace(
        "target", f"pid:{proc.pid}", "--func", "regenerate", "--run", "--duration", "2", "--folded", str(folded)
    )
    assert res.code == 0, res.err
    return {k[1:]: v for k, v in flame.parse_folded(folded.read_text()).items()}, res.out


def test_stripped_go_stack_named_frame_by_frame(built: Built, processes: Processes, tmp_path: Path) -> None:
    need_bpftrace()
    named, _ = _go_stacks(built, processes, "cilium-agent", tmp_path)
    stripped, out = _go_stacks(built, processes, "cilium-agent-stripped", tmp_path)
    assert named and stripped
    leaf = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"
    for stack in stripped:
        assert stack[-1] == leaf and "runtime.goexit" in stack[0], stack
        assert not any(f.startswith("[") for f in stack), f"a frame ctrace could not name: {stack}"
    # Go's .symtab names an assembly function's ABI0 body "runtime.goexit.abi0", its table "runtime.goexit".
    unstripped = {tuple(f.removesuffix(".abi0") for f in stack) for stack in named}
    assert set(stripped) == unstripped, "the stripped binary's frames are named as the unstripped one's"
    _keep("CTRACE_GO_STACK", out)


@pytest.mark.parametrize(
    ("probe", "top"),
    [
        ("uprobe", ["func_c", "func_b", "func_a", "main"]),  # the entry: the caller from the stack top
        ("return", ["func_c", "func_b", "func_a", "main"]),  # each RET: the frame is popped, the same
        ("uretprobe", ["func_b", "func_a", "main"]),  # fires in the caller, after the return
    ],
)
def test_default_run_action_is_aggregated(built: Built, processes: Processes, probe: str, top: list[str]) -> None:
    need_bpftrace()
    proc = processes.start(built["stack-unwind"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "func_c", "--probe", probe, "--run", "--duration", "2")
    assert res.code == 0, res.err
    # Ten calls a second, one stack: counted, printed once, every caller in it.
    (count,) = [
        int(line.split()[0]) for line in res.out.splitlines() if line.endswith(f"PID {proc.pid} (stack-unwind, host)")
    ]
    assert count >= 10
    frames = [line.split()[0] for line in res.out.splitlines() if line.startswith("          ")]
    assert [f.split("+")[0] for f in frames[: len(top)]] == top


def test_folded_needs_run(built: Built) -> None:
    res = ctrace("target", "pid:1", "--func", "x", "--folded", "out")
    assert res.code == 2 and "--folded needs --run" in res.err
    res = ctrace("target", "pid:1", "--func", "x", "--run", "--action", "count", "--flamegraph", "g.svg")
    assert res.code == 2 and "--flamegraph needs --run and the stacks action" in res.err


DUMP = """Attaching 1 probe...
@stacks[uprobe:/tmp/a b/x:f, 25381, 94000000000017,\x20
\t564784e42159 0x564784e42159 ([unknown])
\t564784e4223c main+12 (/tmp/a b/x)
]: 3
@stacks[uprobe:/tmp/x:0x1139, 7, 0,\x20
\t10 0x10 ([unknown])
]: 1
"""


def test_parse_stacks_reads_raw_addresses_and_inserts_the_caller() -> None:
    parsed = named.parse_stacks(DUMP.splitlines())
    assert parsed == [
        named.Stack("uprobe:/tmp/a b/x:f", 25381, (0x564784E42159, 94000000000017, 0x564784E4223C), 3),
        named.Stack("uprobe:/tmp/x:0x1139", 7, (0x10,), 1),
    ]


def test_stacks_named_on_every_bpftrace(family: tuple[int, int], bpftrace: Bpftrace) -> None:
    """The printed stacks program, run by each bpftrace through --run: no warning, the
    30 and 10 calls, each frame named with the caller the entry walk skips."""
    parent, _ = family
    quiet = ctrace("target", f"pid:{parent}", "--func", "f", "--action", "stacks", "-q", *bpftrace.args)
    assert quiet.code == 0, quiet.err
    argv = shlex.split(quiet.out.splitlines()[0])
    assert argv[0] == bpftrace.path and '@stacks["f", pid, *(uint64 *)reg("sp"), ustack(perf)]' in argv[-1]
    args = ["target", f"pid:{parent}", "--func", "f", "--run", "--duration", "5", *bpftrace.args]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctrace", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_attached(proc.pid)
    os.kill(parent, signal.SIGUSR1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert program_warnings(err, argv) == [], f"bpftrace {bpftrace.version}"
    heads = [int(line.split()[0]) for line in out.splitlines() if f"PID {parent} (" in line]
    assert sorted(heads) == [10, 30], out
    blocks = out.split("\n\n")
    for path, calls in (("path_a", 30), ("path_b", 10)):
        (block,) = [b for b in blocks if f"  {path}+" in b]
        names = [line.split()[0].split("+")[0] for line in block.splitlines()[1:]]
        assert block.split()[0] == str(calls) and names[:5] == ["f", "mid", path, "main", "__libc_start_call_main"]


def test_a_process_gone_unseen_is_named_through_a_fork_relative() -> None:
    """A PID ctrace never saw, whose leaf lies where a traced process maps a file, shares
    that process's layout (only fork copies it): its frames are named from that process."""
    import ctypes

    from ctrace.run import symbolize

    libc = ctypes.CDLL(None)
    address = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    assert address is not None
    maps = symbolize.Maps()
    assert maps.take(os.getpid())
    never = 4194304 + 17  # above the largest pid_max: no such process, now or later
    (frame,) = symbolize.frames(maps, never, [address])
    assert frame.function in ("getpid", "__getpid") and frame.offset == 0
    assert maps.ancestors(never) == [os.getpid()]
    (lost,) = symbolize.frames(maps, never, [8])  # nothing maps page 0
    assert symbolize.label(lost, {}) == "[unknown 0x8]"


def test_a_fixed_address_is_no_evidence_of_a_fork(built: Built, processes: Processes) -> None:
    """A non-PIE binary sits at the same address in every process running it: that says
    nothing of where an unseen process's libraries were, so nothing is named through it."""
    from ctrace.run import symbolize

    proc = processes.start(built["stack-unwind"])  # static, ET_EXEC at 0x400000
    maps = symbolize.Maps()
    assert maps.take(proc.pid)
    (text,) = [r for r in maps.regions[proc.pid] if r.path.endswith("/stack-unwind")]
    assert symbolize.frames(maps, proc.pid, [text.start + 0x10])[0].path is not None
    never = 4194304 + 18
    (frame,) = symbolize.frames(maps, never, [text.start + 0x10])
    assert frame.function is None and frame.path is None and maps.ancestors(never) == []


def test_many_functions_print_a_summary_not_a_line_each(built: Built, processes: Processes) -> None:
    proc = processes.start(built["stack-unwind"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "*printf*")
    assert res.code == 0, res.err
    lines = [line for line in res.out.splitlines() if line.startswith("bpftrace ")]
    quiet = [  # each command after its "# PID FUNCTION" label line
        line
        for line in ctrace("target", f"pid:{proc.pid}", "--func", "*printf*", "-q").out.splitlines()
        if line[:1] != "#"
    ]
    assert lines == [] and len(quiet) > 12
    assert f"{len(quiet)} functions match: " in res.out and "add --run" in res.out
    wide = ctrace("target", f"pid:{proc.pid}", "--func", "*printf*", "-o", "wide").out
    assert len([line for line in wide.splitlines() if line.startswith("# ") and "attached" in line]) == len(quiet)


def test_a_program_too_long_for_one_argument_goes_to_a_file() -> None:
    program = "uprobe:/x:f { @[probe] = count(); } " * 3000  # > 64 KiB
    with runner.spilled(["bpftrace", "--unsafe", "-e", program]) as argv:
        assert argv[:2] == ["bpftrace", "--unsafe"] and len(argv) == 3
        assert Path(argv[2]).read_text() == program + "\n"
    assert not Path(argv[2]).exists()
    with runner.spilled(["bpftrace", "-e", "BEGIN { exit(); }"]) as argv:
        assert argv == ["bpftrace", "-e", "BEGIN { exit(); }"]


def test_hostile_frame_names_stay_text(built: Built, processes: Processes, tmp_path: Path) -> None:
    """A function named to break out of the program, the folded line or the SVG: counted,
    named verbatim in the report, ';' kept out of the folded frame, one script in the SVG."""
    need_bpftrace()
    proc = processes.start(built["names"])
    folded, svg = tmp_path / "h.folded", tmp_path / "h.svg"
    args = ["--run", "--duration", "3", "--folded", str(folded), "--flamegraph", str(svg)]
    res = ctrace("target", f"pid:{proc.pid}", "--func", 'x"*', *args)
    assert res.code == 0, res.err
    assert not Path(PWNED).exists()
    assert f"  {HOSTILE}+0x0  (names)" in res.out
    (stack,) = flame.parse_folded(folded.read_text())
    assert stack[-1] == HOSTILE.replace(";", ":") and stack[-2] == "main"
    root = ET.fromstring(svg.read_text())
    assert len(root.findall(".//{http://www.w3.org/2000/svg}script")) == 1
    assert HOSTILE in {str(f["name"]) for f in _frames(root)}


def test_ctrl_c_prints_the_named_stacks_and_exits_130(built: Built, processes: Processes) -> None:
    need_bpftrace()
    proc = processes.start(built["stack-unwind"])
    run = subprocess.Popen(
        [sys.executable, "-m", "ctrace", "target", f"pid:{proc.pid}", "--func", "func_c", "--run"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert run.stdout is not None and run.stdout.readline().startswith("Attach")
    time.sleep(2)
    os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert f"PID {proc.pid} (stack-unwind, host)" in out and "          func_b+0x" in out


@pytest.fixture
def go_container(built: Built, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The stripped Go agent alone in a FROM-scratch image: its file exists only in the container."""
    need(subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "no docker daemon answers")
    name = tag = f"ctrace-stacks-{os.getpid()}"
    tar = tmp_path / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(built["cilium-agent-stripped"], arcname="usr/bin/cilium-agent")
    run(["docker", "import", "-c", 'ENTRYPOINT ["/usr/bin/cilium-agent"]', str(tar), tag])
    try:
        run(["docker", "run", "-d", "--name", name, tag])
        pid = int(run(["docker", "inspect", "-f", "{{.State.Pid}}", name]).stdout)
        time.sleep(0.5)
        yield name, pid
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@pytest.mark.docker
def test_stripped_go_in_a_container_named_and_labelled(go_container: tuple[str, int], bpftrace: Bpftrace) -> None:
    name, pid = go_container  # a container path (proc-root): it fires under every version
    res = ctrace("target", name, "--func", "regenerate", "--run", "--duration", "3", *bpftrace.args)
    assert res.code == 0, res.err
    head, *frames = [b for b in res.out.split("\n\n") if f"PID {pid} " in b][0].splitlines()
    assert f"PID {pid} (cilium-agent, docker container {name})" in head
    names = [f.split()[0].split("+")[0] for f in frames]
    assert names[0] == "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"
    assert names[-1] == "runtime.goexit" and not any(n.startswith("[") for n in names)


def test_a_failing_bpftrace_is_not_reported_as_no_stacks(built: Built, processes: Processes, tmp_path: Path) -> None:
    fake = tmp_path / "bpftrace"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && { echo "bpftrace v0.17.0"; exit 0; }\necho "ERROR: no" >&2\nexit 1\n'
    )
    fake.chmod(0o755)
    proc = processes.start(built["stack-unwind"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "func_c", "--run", "--duration", "5", "--bpftrace", str(fake))
    assert res.code == 1 and "ERROR: no" in res.err
    assert "no stacks were recorded" not in res.out


def test_a_deleted_binary_is_named_through_its_mapping(built: Built, processes: Processes, tmp_path: Path) -> None:
    """bpftrace names frames by path, which a deleted (upgraded) binary no longer has;
    ctrace reads the mapping itself (/proc/PID/map_files) and names them."""
    need_bpftrace()
    exe = tmp_path / "su-deleted"
    exe.write_bytes(built["stack-unwind"].read_bytes())
    exe.chmod(0o755)
    proc = processes.start(exe)
    exe.unlink()
    res = ctrace("target", f"pid:{proc.pid}", "--func", "func_c", "--run", "--duration", "2")
    assert res.code == 0, res.err
    frames = [line.split() for line in res.out.splitlines() if line.startswith("          ")]
    assert [f[0].split("+")[0] for f in frames[:4]] == ["func_c", "func_b", "func_a", "main"]
    assert frames[0][1] == "(su-deleted)"


def test_cpp_frames_demangled_and_only_theirs(
    built: Built, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Naming a C++ frame demangles that frame's name, not every name of the file."""
    from ctrace.elf import demangle
    from ctrace.elf.reader import open_elf
    from ctrace.run import symbolize

    proc = processes.start(built["acme"])
    elf = open_elf(str(built["acme"]))
    (sym,) = [s for s in elf.symbols() if "handshake" in s.name]
    offset = elf.vaddr_to_offset(sym.address)
    assert offset is not None
    maps = symbolize.Maps()
    assert maps.take(proc.pid)
    (r,) = [
        r
        for r in maps.regions[proc.pid]
        if r.path.endswith("/acme") and r.offset <= offset < r.offset + r.end - r.start
    ]
    asked: list[list[str]] = []
    real = demangle.demangle_all

    def recorded(names: list[str]) -> dict[str, str]:
        asked.append(list(names))
        return real(asked[-1])

    monkeypatch.setattr(demangle, "demangle_all", recorded)
    frames = symbolize.frames(maps, proc.pid, [r.start + offset - r.offset + 4])
    readable = symbolize.demangled(f.function for f in frames if f.function)
    assert asked == [[sym.name]] and frames[0].offset == 4
    assert symbolize.label(frames[0], readable) == "acme::net::Conn::handshake(int)"
