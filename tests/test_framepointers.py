"""Frame pointers said before the run, and the DWARF stack through ``--tool perf --run``.

The subject is a small TCP server built with -O2 -fomit-frame-pointer (as Debian
builds nginx and redis), serving each request through five nested calls. The
test proves the warning true (bpftrace's own stack of it stops early), then has
ctrace record it with perf and checks every nested function, in order, in the
named stack, for the traced PID only (a second server on the same file is a
decoy that must not appear). CTRACE_NOFP_REPORT=FILE keeps what a user saw.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrace import elf
from ctrace.elf.reader import open_elf
from ctrace.plan import framepointers
from ctrace.run import perf
from tests.conftest import SRC, Built, Processes, ctrace, fire, need, need_bpftrace, run

NESTED = ("render_response", "route_request", "parse_request", "handle_conn", "serve", "main")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need(shutil.which("gcc") is not None, "gcc is not installed (make test installs it)")
    out = tmp_path_factory.mktemp("nofp")
    src = SRC / "nofp_server.c"
    run(["gcc", "-O2", "-fomit-frame-pointer", "-o", out / "nofp-server", src])
    run(["gcc", "-O2", "-fno-omit-frame-pointer", "-o", out / "fp-server", src])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(processes: Processes, path: Path) -> tuple[int, int]:
    port = free_port()
    proc = processes.start(path, str(port))
    return proc.pid, port


class Client:
    """Sends requests to a port until stopped, so the traced function keeps being called."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            while not self.stop.is_set():
                s.sendall(b"GET /index.html HTTP/1.0\r\n")
                s.recv(600)
                time.sleep(0.005)

    def __enter__(self) -> Client:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def report() -> Iterator[list[str]]:
    lines: list[str] = []
    yield lines
    path = os.environ.get("CTRACE_NOFP_REPORT")
    if path and lines:
        Path(path).write_text("\n".join(lines) + "\n")


def test_verdicts_on_builds_with_and_without(servers: Path, built: Built) -> None:
    nofp = framepointers.verdict(str(servers / "nofp-server"), "c", elf.inspect(str(servers / "nofp-server")).symbols)
    fp = framepointers.verdict(str(servers / "fp-server"), "c", elf.inspect(str(servers / "fp-server")).symbols)
    assert nofp.status == "omitted" and nofp.with_frame == 0 and nofp.sampled >= 5, nofp
    assert fp.status == "kept" and fp.with_frame >= 5, fp  # all but main, whose frame comes after a test
    go = framepointers.verdict(str(built["cilium-agent"]), "go")
    assert go.status == "kept" and "Go" in go.why
    libc = framepointers.verdict("/lib/x86_64-linux-gnu/libc.so.6")
    assert libc.status == "omitted" and libc.sampled >= 100  # Debian's libc: from .eh_frame_hdr's table


def test_a_static_program_is_judged_by_its_own_code(built: Built) -> None:
    """A static link carries libc's code (without frame pointers); the program's own functions decide."""
    # hello has two functions of its own: libc-start.o's helpers linked before
    # __libc_start_main must not outvote them.
    for name, status in (("stack-unwind", "kept"), ("stack-unwind-nofp", "omitted"), ("hello", "kept")):
        path = str(built[name])
        got = framepointers.verdict(path, "c", elf.inspect(path).symbols)
        assert got.status == status and "the C library linked into it" in got.why, got


def test_static_link_without_eh_frame_hdr(tmp_path: Path) -> None:
    """gcc -static leaves out .eh_frame_hdr: the warning does not offer perf's DWARF unwinder then."""
    out = tmp_path / "static"
    run(["gcc", "-O2", "-static", "-fomit-frame-pointer", "-o", out, SRC / "nofp_server.c"])
    got = framepointers.verdict(str(out), "c", elf.inspect(str(out)).symbols)
    assert got.status == "omitted" and not got.eh_frame_hdr
    (warning,) = framepointers.warnings(got, [])
    assert "no .eh_frame_hdr" in warning and "--tool perf --run" not in warning


def test_no_warning_for_a_frame_pointer_build(servers: Path, processes: Processes) -> None:
    pid, _ = start_server(processes, servers / "fp-server")
    res = ctrace("target", f"pid:{pid}", "--func", "render_response", "-o", "json")
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    assert not any("fp-server is built without frame pointers" in w for w in t["warnings"]), t["warnings"]
    assert any(w.startswith("mapped libraries without frame pointers: libc.so.6") for w in t["warnings"])


def test_warning_then_the_dwarf_stack_named(servers: Path, processes: Processes, report: list[str]) -> None:
    need_bpftrace()
    need(shutil.which("perf") is not None, "perf is not installed (make test installs linux-perf)")
    pid, port = start_server(processes, servers / "nofp-server")
    decoy, decoy_port = start_server(processes, servers / "nofp-server")
    res = ctrace("target", f"pid:{pid}", "--func", "render_response", "-o", "json")
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    (warning,) = [w for w in t["warnings"] if "without frame pointers (" in w]
    assert warning.startswith("nofp-server is built without frame pointers (0 of ") and "--tool perf --run" in warning
    with Client(port), Client(decoy_port):
        # The warning is true: bpftrace's frame-pointer stack of the same call misses the callers.
        # The host's bpftrace only: a host process's symbol probe with ustack, the shape
        # test_matrix runs under every version; what is tested here is perf's DWARF stack.
        seen = fire(t["probes"][0]["argv"], "render_response")
        assert seen.fired, seen.stderr
        assert seen.pids == {pid}, (seen.pids, decoy)  # the decoy serves the same file
        assert not {"handle_conn", "serve"} & {f.split("+")[0] for f in seen.stacks[0]}, seen.stacks
        res = ctrace(
            "target", f"pid:{pid}", "--func", "render_response", "--tool", "perf", "--run", "--duration", "2",
            timeout=120,
        )  # fmt: skip
    assert res.code == 0, res.err
    assert "nofp-server is built without frame pointers" in res.err  # said before the run, on stderr
    stacks = [b for b in res.out.split("\n\n")[1:] if " x  pid " in b]
    assert stacks, res.out
    head, *frames = stacks[0].splitlines()
    assert head.split()[3] == str(pid) and all(f"pid {decoy}" not in b for b in stacks), res.out
    assert int(head.split()[0]) >= 20  # ~2 s of requests every few ms
    names = [line.split()[1].split("+")[0] for line in frames]
    assert names[: len(NESTED)] == list(NESTED), frames
    unwinders = [line.split()[0] for line in frames]
    assert unwinders[0] == "probe" and set(unwinders[1 : len(NESTED)]) == {"dwarf"}, frames
    report += [
        "$ ctrace target pid:PID --func render_response --tool perf --run --duration 2",
        *(line for line in res.err.splitlines() if "frame pointers" in line),
        "bpftrace's own ustack of the same call: " + " / ".join(seen.stacks[0]),
        res.out.rstrip(),
    ]


PERF_SCRIPT = (
    "my server 4242/4243 \n"  # perf ends the line with a space
    "\t            1160 parse_request+0x0 (/srv/bin/app)\n"
    "\t          27304 __libc_start_main_impl+0x84 (inlined)\n"
    "\t            5a10 [unknown] (/srv/bin/app)\n"
    "\t        ffffffff [unknown] ([unknown])\n"
    "\n"
)


def test_perf_script_parsed_and_named(servers: Path, processes: Processes) -> None:
    (sample,) = perf.parse(PERF_SCRIPT)
    assert (sample.comm, sample.pid, sample.tid) == ("my server", 4242, 4243)
    assert [f.unwinder for f in sample.frames] == ["probe", "inlined", "dwarf", "dwarf"]
    assert [f.label() for f in sample.frames] == [
        "parse_request+0x0",
        "__libc_start_main_impl+0x84",
        "[app+0x5a10]",
        "[unknown+0xffffffff]",
    ]
    # ctrace names what perf could not, from the process's own file.
    pid, _ = start_server(processes, servers / "nofp-server")
    address = next(s.address for s in elf.inspect(str(servers / "nofp-server")).symbols if s.name == "route_request")
    offset = open_elf(str(servers / "nofp-server")).vaddr_to_offset(address)
    assert offset is not None
    raw = perf.Sample("x", pid, pid, (perf.Frame(offset + 3, "", 0, str(servers / "nofp-server"), "dwarf", ""),))
    (named,) = perf.name([raw], pid)
    assert named.frames[0].label() == "route_request+0x3" and named.frames[0].named_by == "ctrace"
    assert perf.counts([named, named]) == {("route_request",): 2}


def test_frames_perf_cannot_name_are_named_from_ctrace_tables(built: Built) -> None:
    """Stripped Go (perf sees no symbol table) by Go's function table; C++ demangled, one name at a time."""
    go = str(built["cilium-agent-stripped"])
    info = elf.inspect(go)
    (regen,) = [s for s in info.symbols if s.name.endswith("(*Endpoint).regenerate")]
    assert regen.source == "pclntab"
    acme = str(built["acme"])
    (handshake,) = [s for s in elf.inspect(acme).symbols if s.name == "_ZN4acme3net4Conn9handshakeEi"]
    # perf prints a frame's place in its file as a file offset: 0x828e0 for Go's 0x4828e0
    offset = open_elf(go).vaddr_to_offset(regen.address)
    assert offset is not None and offset != regen.address  # a non-PIE executable
    acme_offset = open_elf(acme).vaddr_to_offset(handshake.address)
    assert acme_offset is not None
    frames = (
        perf.Frame(offset + 5, "", 0, go, "probe", ""),
        perf.Frame(acme_offset + 2, "", 0, acme, "dwarf", ""),
    )
    (named,) = perf.name([perf.Sample("x", os.getpid(), os.getpid(), frames)], os.getpid())
    assert [f.label() for f in named.frames] == [f"{regen.name}+0x5", "acme::net::Conn::handshake(int)+0x2"]
    assert {f.named_by for f in named.frames} == {"ctrace"}


def test_perf_stacks_fold_and_draw(tmp_path: Path) -> None:
    """--folded and --flamegraph take perf's stacks the way they take bpftrace's (ctrace/run/flame.py)."""
    (sample,) = perf.parse(PERF_SCRIPT)
    folded, svg = tmp_path / "out.folded", tmp_path / "out.svg"
    perf.write_flames([sample, sample], "parse_request in pid 4242", str(folded), str(svg))
    assert folded.read_text() == "[unknown+0xffffffff];[app+0x5a10];__libc_start_main_impl;parse_request 2\n"
    drawn = svg.read_text()
    assert drawn.startswith("<?xml") or drawn.startswith("<svg"), drawn[:80]
    assert "parse_request in pid 4242" in drawn and "__libc_start_main_impl" in drawn


def test_perf_needs_one_probe(servers: Path, processes: Processes) -> None:
    pid, _ = start_server(processes, servers / "nofp-server")
    res = ctrace("target", f"pid:{pid}", "--func", "*_request", "--tool", "perf", "--run")
    assert res.code == 2 and "records one function in one process; this matched 2" in res.err, res.err
    assert "hint: narrow --func" in res.err


def test_tool_perf_run_leaves_no_event(servers: Path, processes: Processes) -> None:
    need_bpftrace()
    need(shutil.which("perf") is not None, "perf is not installed")
    pid, _ = start_server(processes, servers / "nofp-server")
    res = ctrace("target", f"pid:{pid}", "--func", "serve", "--tool", "perf", "--run", "--duration", "0.5")
    assert res.code == 0, res.err
    assert "perf recorded no calls of serve" in res.out  # serve() is entered once, before the run
    listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    assert f"_{pid}" not in listed


def test_dwarf_stack_of_a_container(servers: Path, tmp_path: Path, report: list[str]) -> None:
    """The same server as a docker container's process: perf probes it through MergedDir,
    records its host PID, and ctrace names the frames from the container's own file."""
    from tests.test_docker import Docker, docker_answers

    need_bpftrace()
    need(shutil.which("perf") is not None, "perf is not installed")
    need(docker_answers(), "no docker daemon answers (make test starts one)")
    static = tmp_path / "nofp-server"
    # static, so the image needs no libc; --eh-frame-hdr, which a static link leaves out and
    # perf's DWARF unwinder needs (without it ctrace says so: test_static_link_without_eh_frame_hdr)
    run(["gcc", "-O2", "-static", "-Wl,--eh-frame-hdr", "-fomit-frame-pointer", "-o", static, SRC / "nofp_server.c"])
    dk = Docker(tmp_path)
    name = f"ctrace-t15b-{os.getpid()}"
    port = free_port()
    try:
        image = dk.rootfs(f"{name}:dev", {"/srv/nofp-server": static}, {}, ["/srv/nofp-server", str(port)])
        pid = dk.start(name, image, "--network", "host")
        with Client(port):
            argv = ["target", name, "--func", "render_response", "--tool", "perf", "--run", "--duration", "2"]
            res = ctrace(*argv, timeout=120)
    finally:
        dk.cleanup()
    assert res.code == 0, res.err
    assert "nofp-server is built without frame pointers" in res.err
    head, *frames = [b for b in res.out.split("\n\n")[1:] if " x  pid " in b][0].splitlines()
    assert head.split()[3] == str(pid), res.out
    names = [line.split()[1].lstrip("*").split("+")[0] for line in frames]
    assert names[: len(NESTED)] == list(NESTED), frames
    report += ["", f"$ ctrace target {name} --func render_response --tool perf --run --duration 2", res.out.rstrip()]
