"""Containers on a real dockerd, probed with real bpftrace: every printed command must fire.

Images have no base (there is no registry): the demo's Dockerfile FROM scratch,
or a root filesystem tarball given to ``docker import``. Names start with
``ctrace-t4-PID-`` and tags end in ``:PID`` (the session's) so sessions run side by side on
one dockerd cannot remove each other's; all are removed at the end of the session.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ctrace.resolvers import docker, engine
from tests.conftest import ROOT, Bpftrace, Built, Processes, ctrace, fire, need, need_bpftrace, run

pytestmark = [pytest.mark.docker, pytest.mark.bpftrace]
P = f"ctrace-t4-{os.getpid()}-"
REGEN = "github.com/cilium/cilium/pkg/endpoint.(*Endpoint).regenerate"
DECOY = Path("/opt/agent/bin/agent-1.2")
FORMS: dict[str, list[str]] = {}  # scenario -> forms that fired, printed at the end


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


class Docker:
    """Images and containers of this session."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.images: list[str] = []
        self.containers: list[str] = []

    def build(self, tag: str, context: Path) -> str:
        run(["docker", "build", "-q", "-t", tag, str(context)])
        self.images.append(tag)
        return tag

    def rootfs(self, tag: str, files: dict[str, Path], links: dict[str, str], entrypoint: list[str]) -> str:
        """``docker import`` of a tarball holding ``files`` and absolute ``links``."""
        tar = self.tmp / (tag.replace("/", "_").replace(":", "_") + ".tar")
        with tarfile.open(tar, "w") as tf:
            dirs = {str(Path(p).parent) for p in [*files, *links]}
            for d in sorted({str(a) for p in dirs for a in [Path(p), *Path(p).parents] if str(a) != "/"}):
                info = tarfile.TarInfo(d.lstrip("/"))
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            for dest, src in files.items():
                tf.add(Path(src).resolve(), arcname=dest.lstrip("/"))
            for dest, target in links.items():
                info = tarfile.TarInfo(dest.lstrip("/"))
                info.type, info.linkname = tarfile.SYMTYPE, target
                tf.addfile(info)
        run(["docker", "import", "-c", f"ENTRYPOINT {json.dumps(entrypoint)}", str(tar), tag])
        self.images.append(tag)
        return tag

    def start(self, name: str, image: str, *extra: str, cmd: Sequence[str] = ()) -> int:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        run(["docker", "run", "-d", "--name", name, *extra, image, *cmd])
        self.containers.append(name)
        for _ in range(50):
            pid = int(run(["docker", "inspect", "-f", "{{.State.Pid}}", name]).stdout)
            if pid:
                time.sleep(0.3)
                return pid
            time.sleep(0.1)
        raise AssertionError(f"{name} did not start")

    def cleanup(self) -> None:
        if self.containers:
            subprocess.run(["docker", "rm", "-f", *self.containers], capture_output=True)
        if self.images:
            subprocess.run(["docker", "rmi", "-f", *self.images], capture_output=True)


@pytest.fixture(scope="session")
def dk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docker]:
    need(docker_answers(), "no docker daemon answers (make test starts one)")
    d = Docker(tmp_path_factory.mktemp("docker"))
    yield d
    d.cleanup()
    for scenario, forms in sorted(FORMS.items()):
        print(f"forms fired: {scenario}: {', '.join(forms)}")


@pytest.fixture(autouse=True)
def _tools() -> None:
    need_bpftrace()


@pytest.fixture(scope="session")
def cilium_image(dk: Docker, built: Built) -> str:
    context = dk.tmp / "cilium"
    context.mkdir()
    shutil.copy(ROOT / "demo" / "cilium-agent" / "Dockerfile", context)
    shutil.copy(built["cilium-agent"], context)
    return dk.build(f"ctrace-t4/cilium-agent:{os.getpid()}", context)


@pytest.fixture(scope="session")
def agent_image(dk: Docker, built: Built) -> str:
    """A static C program behind an absolute symlink, and busybox as /bin/sh."""
    files = {"/opt/agent/bin/agent-1.2": built["hello"], "/bin/busybox": Path("/bin/busybox")}
    links = {"/usr/bin/agent": "/opt/agent/bin/agent-1.2", "/bin/sh": "/bin/busybox"}
    return dk.rootfs(f"ctrace-t4/agent:{os.getpid()}", files, links, ["/usr/bin/agent"])


@pytest.fixture(scope="session")
def decoy(built: Built) -> Iterator[Path]:
    """A different program at the symlink target's path on the host: ctrace must never use it."""
    if DECOY.exists() or DECOY.parent.parent.exists():
        yield DECOY  # someone else's /opt/agent: leave it alone; the test still checks build-ids
        return
    DECOY.parent.mkdir(parents=True)
    shutil.copy(built["stack-unwind"], DECOY)
    yield DECOY
    shutil.rmtree(DECOY.parent.parent)


def targets(*args: str) -> list[dict[str, Any]]:
    res = ctrace("target", *args, "-o", "json")
    assert res.code == 0, res.err
    found: list[dict[str, Any]] = res.json()["targets"]
    return found


def bound_to(argv: list[str]) -> int | None:
    """The PID a command is bound to (ctrace/bpftrace/binding.py): the PID it seeds, or the PID of
    the mount namespace it seeds (a container target)."""
    pids = re.findall(r"@ctrace_pids\[(\d+)\] = 1;", argv[-1])
    if pids:
        return int(pids[0])
    spaces = {int(n) for n in re.findall(r"@ctrace_mntns\[(\d+)\] = 1;", argv[-1])}
    # The PID in its paths, or the one whose exit ends the program (a container's init),
    # else any process in that mount namespace (a worker's program names no PID).
    named = [int(p) for p in re.findall(r"(?:/proc/|/tid == )(\d+)/", argv[-1])]
    others = [int(p) for p in os.listdir("/proc") if p.isdigit()] if spaces else []
    for pid in [*named, *others]:
        try:
            if os.stat(f"/proc/{pid}/ns/mnt").st_ino in spaces:
                return pid
        except OSError:
            continue
    return None


def fire_all(
    scenario: str, bts: Sequence[Bpftrace], args: Sequence[str], shown: str, pid: int | None = None
) -> list[str]:
    """Ask ctrace for the target's program with each bpftrace's --bpftrace (-p and path handling
    differ by version) and run the recommended command and every alternative: each must fire,
    only in the target (or, bound to a mount namespace, only in that container). Returns the
    forms, the same under every version."""
    every: dict[str, list[str]] = {}
    for bt in bts:
        found = targets(*args, *bt.args)
        (t,) = [t for t in found if pid in (None, t["pid"])]
        probe = t["probes"][0]
        forms = []
        for cmd in [probe, *probe["alternatives"]]:
            argv = cmd["argv"]
            assert argv[0] == bt.path, argv  # the line runs the bpftrace it was printed for
            # Bound to a PID, or to a container's mount namespace (a container of several processes).
            assert bound_to(argv) is not None or "@ctrace_mntns[" in argv[-1], f"not bound: {argv}"
            result = fire(argv, shown, want=2)
            where = f"{scenario}: {cmd['form']} under bpftrace {bt.version}"
            assert result.fired, f"{where} did not fire: {argv}\n{result.stderr}"
            allowed = {t["pid"]} if "@ctrace_mntns[" not in argv[-1] else same_mntns(t["pid"])
            assert result.pids and result.pids <= allowed, (where, result.pids, allowed)
            assert not result.warnings, (where, result.warnings)
            forms.append(cmd["form"])
        every[bt.version] = forms
    assert len({tuple(f) for f in every.values()}) == 1, every
    FORMS[scenario] = forms
    return forms


def same_mntns(pid: int) -> set[int]:
    ino = os.stat(f"/proc/{pid}/ns/mnt").st_ino
    found = set()
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{p}/ns/mnt").st_ino == ino:
                found.add(int(p))
        except OSError:
            continue
    return found


def build_id(path: Path | str) -> str:
    out = run(["readelf", "-n", str(path)]).stdout
    return out.split("Build ID:")[1].split()[0]


def test_cilium_agent_container(dk: Docker, cilium_image: str, bpftraces: list[Bpftrace]) -> None:
    pid = dk.start(f"{P}cilium-agent", cilium_image)
    (t,) = targets(f"{P}cilium-agent", "--func", "regenerate")
    c = t["container"]
    assert (t["pid"], t["runtime"], t["init"], t["nspid"]) == (pid, "docker", True, [pid, 1])
    assert (c["name"], c["image"], c["runtime"], c["init_pid"]) == (f"{P}cilium-agent", cilium_image, "docker", pid)
    b = t["binary"]
    assert b["path"] == "/usr/bin/cilium-agent"
    assert b["host_path"] == f"/proc/{pid}/root/usr/bin/cilium-agent"
    assert b["merged_path"] == c["merged_dir"] + "/usr/bin/cilium-agent"
    (probe,) = t["probes"]
    assert probe["symbol"] == REGEN
    assert fire_all("cilium-agent (Go, overlay2)", bpftraces, (f"{P}cilium-agent", "--func", "regenerate"), REGEN) == [
        "proc-root",
        "merged",
        "pid-path",
        "exe",
    ]
    # a short ID names the same container, and gives the same one target
    assert [x["pid"] for x in targets(c["id"][:12], "--func", "regenerate")] == [pid]


def test_absolute_symlink_resolves_inside_the_container(
    dk: Docker, agent_image: str, decoy: Path, built: Built, bpftraces: list[Bpftrace]
) -> None:
    pid = dk.start(f"{P}symlink", agent_image)
    (t,) = targets(f"{P}symlink", "--func", "hello")
    b = t["binary"]
    assert b["path"] == str(DECOY)
    assert b["host_path"] == f"/proc/{pid}/root{DECOY}"
    assert b["build_id"] == build_id(built["hello"]) != build_id(DECOY)
    forms = fire_all("absolute symlink (static C)", bpftraces, (f"{P}symlink", "--func", "hello"), "hello")
    assert forms == ["proc-root", "merged", "pid-path", "exe"]


def test_bind_mounted_binary_has_no_merged_path(
    dk: Docker, agent_image: str, built: Built, tmp_path: Path, bpftraces: list[Bpftrace]
) -> None:
    # The container and its process share a name: still one target.
    name = f"{P}bind"
    (tmp_path / name).write_bytes(built["hello"].read_bytes())
    (tmp_path / name).chmod(0o755)
    pid = dk.start(name, agent_image, "-v", f"{tmp_path}:/mnt/bin:ro", "--entrypoint", f"/mnt/bin/{name}")
    (t,) = targets(name, "--func", "hello")
    assert (t["pid"], t["container"]["name"]) == (pid, name)
    assert t["binary"]["path"] == f"/mnt/bin/{name}" and t["binary"]["merged_path"] is None
    assert fire_all("bind mount", bpftraces, (name, "--func", "hello"), "hello") == ["proc-root", "pid-path", "exe"]


@pytest.fixture(scope="session")
def dyn_pid(dk: Docker, built: Built) -> int:
    """A dynamically linked program with its own loader and libc in the image."""
    files = {
        "/usr/bin/hello-dyn": built["hello-dyn"],
        "/lib64/ld-linux-x86-64.so.2": Path("/lib64/ld-linux-x86-64.so.2"),
        "/lib/x86_64-linux-gnu/libc.so.6": Path("/lib/x86_64-linux-gnu/libc.so.6"),
    }
    image = dk.rootfs(f"ctrace-t4/dyn:{os.getpid()}", files, {}, ["/usr/bin/hello-dyn"])
    return dk.start(f"{P}dyn", image)


def test_dynamic_program_in_container(dyn_pid: int, bpftraces: list[Bpftrace]) -> None:
    (t,) = targets(f"{P}dyn", "--func", "hello")
    assert t["binary"]["path"] == "/usr/bin/hello-dyn"
    fire_all("dynamic executable", bpftraces, (f"{P}dyn", "--func", "hello"), "hello")


def test_lib_probes_the_containers_libc(dyn_pid: int, bpftraces: list[Bpftrace]) -> None:
    (t,) = targets(f"{P}dyn", "--lib", "libc", "--func", "usleep")
    b = t["binary"]
    assert b["path"] == "/lib/x86_64-linux-gnu/libc.so.6"
    assert b["host_path"] == f"/proc/{dyn_pid}/root/lib/x86_64-linux-gnu/libc.so.6"
    # the container's copy, not the host's libc
    assert os.stat(b["host_path"]).st_ino != os.stat("/lib/x86_64-linux-gnu/libc.so.6").st_ino
    (probe,) = t["probes"]
    assert probe["symbol"] == "usleep"
    assert fire_all("--lib libc (own libc)", bpftraces, (f"{P}dyn", "--lib", "libc", "--func", "usleep"), "usleep") == [
        "proc-root",
        "merged",
        "pid-path",
    ]


def test_lib_errors(dyn_pid: int) -> None:
    res = ctrace("target", f"{P}dyn", "--lib", "libnope", "--func", "x")
    assert res.code == 1 and "maps no library named libnope*" in res.err and "hint: it maps:" in res.err
    res = ctrace("target", f"{P}dyn", "--lib", "l", "--func", "x")  # ld-linux and libc
    assert res.code == 2 and "matches 2 files" in res.err, res.err


def test_replicas_prefix_needs_all_and_warns_shared(dk: Docker, cilium_image: str, bpftraces: list[Bpftrace]) -> None:
    pids = [dk.start(f"{P}rep-{n}", cilium_image) for n in (1, 2)]
    res = ctrace("target", f"{P}rep", "--func", "regenerate")
    assert res.code == 2, res.err
    assert f"{P}rep-1" in res.err and f"{P}rep-2" in res.err and "--all" in res.err
    found = targets(f"{P}rep", "--all", "--func", "regenerate")
    assert sorted(t["pid"] for t in found) == sorted(pids)
    for t in found:
        other = next(p for p in pids if p != t["pid"])
        assert any("same file" in w and str(other) in w for w in t["warnings"]), t["warnings"]
        probe = t["probes"][0]
        assert all(bound_to(c["argv"]) == t["pid"] for c in [probe, *probe["alternatives"]])
        args = (f"{P}rep", "--all", "--func", "regenerate")
        fire_all(f"replica {t['container']['name']}", bpftraces, args, REGEN, t["pid"])


def test_multi_process_container(dk: Docker, agent_image: str, bpftraces: list[Bpftrace]) -> None:
    name = f"{P}multi"
    # busybox sh starts one agent in the background, then becomes the other (the init process)
    init = dk.start(name, agent_image, "--entrypoint", "/bin/sh", cmd=["-c", "/usr/bin/agent & exec /usr/bin/agent"])
    found = targets(name, "--func", "hello")
    assert len(found) == 2, found
    assert sorted(t["init"] for t in found) == [False, True]
    assert next(t["pid"] for t in found if t["init"]) == init
    for t in found:
        scenario = f"multi-process ({'init' if t['init'] else 'child'})"
        fire_all(scenario, bpftraces, (name, "--func", "hello"), "hello", t["pid"])
    res = ctrace("ps", "--container", name, "-o", "json")
    assert res.code == 0, res.err
    rows = res.json()["processes"]
    assert sorted(r["container_pid"] for r in rows)[0] == 1 and len(rows) == 2
    assert {r["pid"] for r in rows} == {t["pid"] for t in found}


def test_deleted_binary_in_container(dk: Docker, cilium_image: str, bpftraces: list[Bpftrace]) -> None:
    name = f"{P}deleted"
    pid = dk.start(name, cilium_image)
    merged = run(["docker", "inspect", "-f", "{{.GraphDriver.Data.MergedDir}}", name]).stdout.strip()
    os.unlink(f"{merged}/usr/bin/cilium-agent")  # a whiteout in the upper layer; the process keeps running
    (t,) = targets(name, "--func", "regenerate")
    b = t["binary"]
    assert (b["deleted"], b["host_path"], b["merged_path"]) == (True, f"/proc/{pid}/exe", None)
    assert any("deleted" in w for w in t["warnings"])
    # bpftrace 0.17 cannot open the deleted path to name frames: the stack starts at the bare address
    probe = t["probes"][0]
    assert fire_all("deleted in container", bpftraces, (name, "--func", "regenerate"), hex(probe["address"])) == ["exe"]


def test_ps_shows_containers(dk: Docker, cilium_image: str) -> None:
    pid = dk.start(f"{P}ps", cilium_image)
    res = ctrace("ps", "cilium-agent")
    assert res.code == 0, res.err
    row = next(line for line in res.out.splitlines() if line.startswith(f"{pid} "))
    cid = run(["docker", "inspect", "-f", "{{.Id}}", f"{P}ps"]).stdout.strip()
    assert f"{P}ps*" in row and cid[:12] in row  # * marks the init process
    res = ctrace("ps", "--container", f"{P}nope")
    assert res.code == 1 and "no running container" in res.err


def test_no_daemon_falls_back_to_host(built: Built, processes: Processes, tmp_path: Path) -> None:
    name = f"t4-nd{os.getpid()}"  # unique: other sessions on this machine run this test too
    exe = tmp_path / name
    exe.write_bytes(built["hello"].read_bytes())
    exe.chmod(0o755)
    proc = processes.start(exe)
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no.sock"}
    res = ctrace("target", name, "--func", "hello", "-o", "json", env=env)
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    assert t["pid"] == proc.pid and any("cannot talk to the docker daemon" in w for w in t["warnings"])
    res = ctrace("target", f"{P}no-such-thing", "--func", "hello", env=env)
    assert res.code == 3 and res.err.startswith("ctrace: error: cannot talk to the docker daemon"), res.err
    assert "\nhint: " in res.err and "Traceback" not in res.err


def test_lib_on_a_host_process(built: Built, processes: Processes, bpftraces: list[Bpftrace]) -> None:
    proc = processes.start(built["hello-dyn"])
    (t,) = targets(f"pid:{proc.pid}", "--lib", "libc.so", "--func", "usleep")
    b = t["binary"]
    assert b["path"].endswith("/libc.so.6") and b["host_path"] == f"/proc/{proc.pid}/root{b['path']}"
    assert any("same file" in w for w in t["warnings"])  # the host's libc: every process maps it
    args = (f"pid:{proc.pid}", "--lib", "libc.so", "--func", "usleep")
    assert fire_all("--lib libc (host process)", bpftraces, args, "usleep") == ["proc-root"]


def test_local_socket_imports_no_http_library(dk: Docker, cilium_image: str) -> None:
    # `import docker` (requests, urllib3, http.client) added ~100 ms of a 300 ms budget (engine.py).
    name = f"{P}no-sdk"
    pid = dk.start(name, cilium_image)
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_TLS_VERIFY")}
    argv = [sys.executable, "-X", "importtime", "-m", "ctrace", "target", name, "--func", "main.main", "-o", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [t["pid"] for t in json.loads(proc.stdout)["targets"]] == [pid]
    rows = [line.split("|") for line in proc.stderr.splitlines() if line.startswith("import time:")]
    imported = {row[-1].strip() for row in rows if len(row) == 3}
    assert "ctrace.resolvers.engine" in imported
    heavy = {m for m in imported if m.split(".")[0] in ("docker", "requests", "urllib3") or m == "http.client"}
    assert not heavy, sorted(heavy)


def test_socket_and_sdk_agree(dk: Docker, cilium_image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"{P}socket"
    pid = dk.start(name, cilium_image)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    local, sdk = docker.client(), docker.Sdk.connect()
    assert isinstance(local, engine.Engine)
    (mine,) = [s for s in local.containers() if s["Names"] == [f"/{name}"]]
    (theirs,) = [s for s in sdk.containers() if s["Id"] == mine["Id"]]
    assert (theirs["Names"], theirs["Image"]) == (mine["Names"], mine["Image"])  # Status ("Up 1 second") moves on
    found = docker.container(local, mine["Id"])
    assert found is not None and found == docker.container(sdk, mine["Id"])
    assert (found.name, found.image, found.init_pid) == (name, cilium_image, pid)
    assert local.inspect("0" * 64) is None and sdk.inspect("0" * 64) is None
    # Both framings, from the real daemon: an inspect body is chunked, a ping has Content-Length.
    inspected = engine.parse(engine.request(local.path, f"/containers/{mine['Id']}/json"))
    assert inspected.headers.get("transfer-encoding") == "chunked"
    assert json.loads(inspected.body)["Id"] == mine["Id"]
    pong = engine.parse(engine.request(local.path, "/_ping"))
    assert (pong.status, pong.headers["content-length"], pong.body) == (200, "2", b"OK")


def _shape(text: str, name: str, image: str) -> list[str]:
    """Lines with the container's name and image, IDs, hashes and numbers made alike (the comm stays)."""
    text = text.replace(f"container {name}", "container NAME").replace(f"image {image}", "image IMAGE")
    text = re.sub(r"[0-9a-f]{6,}(\.\.\.[0-9a-f]+)?", "HEX", text)
    # A warning depends on what else runs (another container of the same image): not the example's.
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("warning:")]
    return [re.sub(r"\d+", "N", line) for line in lines]


def test_readme_first_example_is_what_ctrace_prints(dk: Docker, cilium_image: str) -> None:
    """The README opens with `ctrace target cilium-agent --func regenerate`: its output, as printed now."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("    $ ctrace target cilium-agent --func regenerate\n")
    shown = readme[start : readme.index("    # other path forms", start)].split("\n", 1)[1]
    name = f"{P}cilium-agent"
    dk.start(name, cilium_image)
    res = ctrace("target", name, "--runtime", "docker", "--func", "regenerate")
    assert res.code == 0, res.err
    printed = res.out[: res.out.index("# other path forms")]
    assert _shape(shown, "cilium-agent", "ctrace/cilium-agent:dev") == _shape(printed, name, cilium_image)
