"""Shared fixtures: binaries compiled in this session, processes running them,
and helpers to run ctrace and the bpftrace commands it prints.

Integration tests skip with a printed reason where docker, bpftrace or root is
missing; under CI=true such a skip is a failure, so a green CI means they ran.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.cluster import Cluster, Kube

ROOT = Path(__file__).resolve().parent.parent
SRC = Path(__file__).resolve().parent / "fixtures" / "src"
CI = os.environ.get("CI") == "true"


def need(condition: bool, reason: str, optional: bool = False) -> None:
    """Skip when ``condition`` is false; under CI=true fail instead, unless ``optional``:
    what CI cannot have (a kernel feature, a tool make test does not install) says so here.
    Every skip in the tests goes through this one function (grep for "optional=True")."""
    if condition:
        return
    if CI and not optional:
        pytest.fail(f"CI=true and {reason}: integration tests must run, not skip")
    pytest.skip(reason)


def need_bpftrace() -> None:
    need(shutil.which("bpftrace") is not None, "bpftrace is not installed")
    need(os.geteuid() == 0, "bpftrace needs root")


# The bpftrace version matrix: Debian's bpftrace of each release, the host's own and the
# others from hack/bpftrace-versions.sh's chroots, each run through DIR/ctrace-bpftrace.
BPFTRACE_CACHE = Path(os.environ.get("CTRACE_BPFTRACE_CACHE", "/var/cache/ctrace-bpftrace"))
SUITES = ("bookworm", "trixie", "sid")


def host_suite() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.partition("=")[2].strip().strip('"')
    return ""


HOST_SUITE = host_suite()
BPFTRACE_PARAMS = SUITES if HOST_SUITE in SUITES else ("host", *SUITES)


@dataclass(frozen=True)
class Bpftrace:
    """One bpftrace of the matrix: give ``path`` to ctrace's --bpftrace; it runs as is."""

    suite: str
    version: str  # "0.23.2"
    path: str

    @property
    def args(self) -> tuple[str, ...]:
        return ("--bpftrace", self.path)


def find_bpftrace(suite: str) -> Bpftrace | None:
    from ctrace.bpftrace.dialect import parse_version

    if suite in ("host", HOST_SUITE):
        path = shutil.which("bpftrace")
    else:
        wrapper = BPFTRACE_CACHE / suite / "ctrace-bpftrace"
        path = str(wrapper) if os.access(wrapper, os.X_OK) else None
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    version = parse_version(out.stdout + out.stderr)
    return Bpftrace(suite, ".".join(map(str, version)), path) if version else None


@pytest.fixture(scope="session", params=BPFTRACE_PARAMS)
def bpftrace(request: pytest.FixtureRequest) -> Bpftrace:
    """Each bpftrace of the matrix in turn; under CI=true a missing one fails."""
    need_bpftrace()
    suite: str = request.param
    found = find_bpftrace(suite)
    where = "bpftrace on PATH" if suite in ("host", HOST_SUITE) else f"{BPFTRACE_CACHE / suite}/ctrace-bpftrace"
    need(found is not None, f"Debian {suite}'s bpftrace is missing ({where}; hack/bpftrace-versions.sh builds it)")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def host_bpftrace() -> Bpftrace:
    """The machine's own bpftrace alone, for a test of what does not change with bpftrace's
    version (a protocol, a process's lifecycle): once, not once per version of the matrix."""
    need_bpftrace()
    found = find_bpftrace("host")
    need(found is not None, "bpftrace on PATH does not say its version")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def bpftraces() -> list[Bpftrace]:
    """Every bpftrace of the matrix at once, for a test whose setup (containers, pods) is
    shared and whose printed programs it then runs under each; under CI=true a missing one fails."""
    need_bpftrace()
    found = []
    for suite in BPFTRACE_PARAMS:
        bt = find_bpftrace(suite)
        need(bt is not None, f"Debian {suite}'s bpftrace is missing (hack/bpftrace-versions.sh builds it)")
        assert bt is not None
        found.append(bt)
    return found


def program_warnings(stderr: str, argv: Sequence[str]) -> list[str]:
    """What bpftrace said about the program: every warning or error line but those about the
    machine (dialect.MACHINE_WARNINGS), bpftrace's own at exit (dialect.EXIT_DEFECTS) and, for
    a command with --unsafe, the one that comes with it."""
    from ctrace.bpftrace.dialect import EXIT_DEFECTS, MACHINE_WARNINGS, UNSAFE_WARNING

    found = []
    for line in stderr.splitlines():
        if "WARNING" not in line and "ERROR" not in line:
            continue
        if any(rx.search(line) for rx in MACHINE_WARNINGS) or EXIT_DEFECTS.search(line):
            continue  # the machine's, or bpftrace 0.17's own at exit (counted by test_matrix)
        if "--unsafe" in argv and UNSAFE_WARNING.search(line):
            continue
        found.append(line.strip())
    return found


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every ctrace run of the session caches under a temporary XDG_CACHE_HOME, never ~/.cache."""
    home = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(home)
    yield home
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def ctrace(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Result:
    """Run the real CLI in a child process, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "ctrace", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run(argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True, **kw)


@dataclass(frozen=True)
class Firing:
    fired: bool
    stacks: list[list[str]]
    stderr: str
    warnings: list[str]  # program_warnings: none is allowed
    pids: set[int]  # the PIDs of the events' "pid=N label" lines (actions.stack)


def _take(text: str, current: list[str], symbol: str, stacks: list[list[str]], pids: set[int]) -> list[str]:
    """One line of a stack program's output: the event's frames so far, after it."""
    # Each event's "pid=N label" line (actions.stack) comes before its frames.
    if text.startswith("pid=") and not current:
        pids.add(int(text[4:].split()[0]))
    elif text:
        current.append(text)
    elif current:
        # A stripped binary's frames are bare addresses: "0x4828e0".
        if current[0].startswith(symbol + "+") or current[0] == symbol:
            stacks.append(current)
        return []
    return current


def fire(argv: Sequence[str], symbol: str, timeout: float = 20.0, want: int = 1) -> Firing:
    """Run a printed bpftrace command until ``want`` stacks starting at ``symbol`` arrive.

    ``symbol`` is a name (frames "name+off") or, for a stripped binary, a hex address."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    stacks: list[list[str]] = []
    current: list[str] = []
    pids: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(stacks) < want:
            if not sel.select(timeout=0.2):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            current = _take(line.strip(), current, symbol, stacks, pids)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    return Firing(bool(stacks), stacks, err, program_warnings(err, argv), pids)


class Session:
    """A bpftrace command running in the background: wait until its probes are attached,
    stop it with SIGINT (as Ctrl-C) and read everything it printed. A thread reads each
    stream, so no line waits in a buffer that select() cannot see."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self.attached = threading.Event()
        self.readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for t in self.readers:
            t.start()

    def _read(self, stream: Any, lines: list[str]) -> None:
        from ctrace.bpftrace.dialect import ATTACHED

        for line in stream:
            lines.append(line)
            if ATTACHED.search(line.strip()):
                self.attached.set()

    def wait_attached(self, timeout: float = 60.0) -> bool:
        """0.17 and 0.23 say "Attaching N probes..." on stdout, 0.27 "Attached N probes" on stderr."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.attached.wait(0.2):
                return True
        return self.attached.is_set()

    def drain(self, quiet: float = 1.0, timeout: float = 90.0) -> None:
        """Wait until bpftrace has neither printed nor used CPU for ``quiet`` seconds: it is
        behind when it names many stacks, and its output into a pipe is block-buffered."""
        deadline = time.monotonic() + timeout
        seen: tuple[int, int] = (-1, -1)
        since = time.monotonic()
        while time.monotonic() < deadline and self.proc.poll() is None:
            now = (len(self.out) + len(self.err), self._cpu())
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.2)

    def _cpu(self) -> int:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return -1
        return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks

    def stop(self, timeout: float = 30.0) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for t in self.readers:
            t.join(timeout=10)
        return "".join(self.out), "".join(self.err)


@dataclass(frozen=True)
class Built:
    """Paths of the fixture binaries compiled for this session."""

    dir: Path

    def __getitem__(self, name: str) -> Path:
        return self.dir / name


# Names given to the functions of names.c after linking.
STAR_T = "pkg.(*T).m"
STAR_UT = "pkg.(*UT).m"  # what "pkg.(*T).m" also matches as a bpftrace glob
PWNED = "/tmp/ctrace-pwned"
HOSTILE = f'x"; system("touch {PWNED}"); "'


def _compile(out: Path) -> None:
    cc = ["gcc", "-O0", "-g0"]
    fp = "-fno-omit-frame-pointer"
    run([*cc, "-static", fp, "-o", out / "hello", SRC / "hello.c"])
    run([*cc, fp, "-rdynamic", "-o", out / "hello-dyn", SRC / "hello.c"])
    run([*cc, "-static", fp, "-o", out / "stack-unwind", SRC / "stack_unwind.c"])
    run([*cc, "-static", "-fomit-frame-pointer", "-o", out / "stack-unwind-nofp", SRC / "stack_unwind.c"])
    run(["g++", "-O0", fp, "-o", out / "acme", SRC / "acme.cpp"])
    for name in ("hello", "hello-dyn"):
        shutil.copy(out / name, out / f"{name}-stripped")
        run(["strip", "-s", out / f"{name}-stripped"])
    run([*cc, "-static", fp, "-o", out / "names.o", SRC / "names.c"])
    renames = {"star_t": STAR_T, "star_ut": STAR_UT, "hostile": HOSTILE}
    run(["objcopy", *(f"--redefine-sym={k}={v}" for k, v in renames.items()), out / "names.o", out / "names"])
    (out / "names.o").unlink()
    env = {**os.environ, "GOCACHE": str(out / "gocache"), "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    go = ROOT / "demo" / "cilium-agent"
    run(["go", "build", "-o", out / "cilium-agent", "."], cwd=go, env=env)
    run(["go", "build", "-ldflags=-s -w", "-o", out / "cilium-agent-stripped", "."], cwd=go, env=env)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    for tool in ("gcc", "g++", "go", "strip"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (make test installs it)")
    out = tmp_path_factory.mktemp("bin")
    _compile(out)
    return Built(out)


class Processes:
    """Start fixture binaries; all are killed at the end of the session."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, path: Path | str, *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(path), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
        self.procs.append(proc)
        time.sleep(0.2)
        assert proc.poll() is None, f"{path} exited at once"
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def processes() -> Iterator[Processes]:
    ps = Processes()
    yield ps
    ps.stop_all()


@pytest.fixture(scope="session")
def ux_container(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running docker container named ctrace-ux-stPID (no process has that name), from a
    one-file root filesystem: what a user's container looks like to completion and ps."""
    import tarfile

    need(shutil.which("docker") is not None, "docker is not installed")
    need(subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "no docker daemon answers")
    tar = tmp_path_factory.mktemp("ux") / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(built["hello"], arcname="hello")
    tag, name = f"ctrace-test/ux:{os.getpid()}", f"ctrace-ux-st{os.getpid()}"
    run(["docker", "import", "-c", 'ENTRYPOINT ["/hello"]', str(tar), tag])
    try:
        run(["docker", "run", "-d", "--name", name, tag])
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes the session's cluster down runs after every other test."""
    items.sort(key=lambda item: item.get_closest_marker("cluster_down") is not None)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The local Kubernetes cluster (hack/cluster.sh): up once per session (built on first use
    and cached under /var/cache/ctrace-k8s), down at its end. One that was up before the session
    (a developer's) is used and left up."""
    from tests import cluster as local

    need(os.geteuid() == 0, "the local cluster needs root (docker, veth, cgroups)")
    need(shutil.which("docker") is not None, "docker is not installed")
    need(subprocess.run(["docker", "info"], capture_output=True).returncode == 0, "no docker daemon answers")
    need(shutil.which("debootstrap") is not None, "debootstrap is not installed (make test installs it)")
    local.make_subreaper()
    was_up = local.is_up()
    found = local.up(was_up)
    yield found
    if was_up:
        if not local.is_up():
            local.up(was_up)  # a test took it down: leave it as it was found
    elif local.STATE.exists():
        local.down()


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest, built: Built) -> Kube:
    """The kind suite's cluster: kind's context where hack/kind-test.sh made one
    (CTRACE_KIND_CONTEXT), else the local cluster with manifests/ applied as they are."""
    from tests import cluster as local

    context = os.environ.get("CTRACE_KIND_CONTEXT", "")
    if context:
        return local.Kube("kubectl", ("--context", context))
    return local.deploy_manifests(request.getfixturevalue("cluster"), built["cilium-agent"])


@pytest.fixture(scope="session")
def k8s_namespace(cluster: Cluster, built: Built) -> Iterator[str]:
    """A namespace of the session's own on the local cluster, with tests/cluster.py's WORKLOADS."""
    from tests import cluster as local

    namespace = f"ctrace-test-{os.getpid()}"
    local.deploy_workloads(cluster, namespace, built["cilium-agent"])
    yield namespace
    cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
