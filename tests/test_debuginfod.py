"""Missing debug symbols explained, and fetched by build-id from a debuginfod server.

The subject is counted.c built with -g, its debug file split off (objcopy
--only-keep-debug) and the binary stripped, so helper_only_in_debug is named
only by the debug file. Debian's own ``debuginfod`` serves that file from a
directory on 127.0.0.1; ctrace fetches it, and the printed probe fires.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrace.elf import debuginfo
from ctrace.elf.reader import open_elf
from tests.conftest import SRC, Bpftrace, Processes, ctrace, fire, need, run
from tests.symfix import load_base

FUNC = "helper_only_in_debug"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """counted-split (stripped, build-id, no debug link) and served/counted.debug."""
    for tool in ("gcc", "objcopy", "strip"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (make test installs it)")
    out = tmp_path_factory.mktemp("split")
    (out / "served").mkdir()
    run(["gcc", "-O2", "-g", "-o", out / "counted", SRC / "counted.c"])
    run(["objcopy", "--only-keep-debug", out / "counted", out / "served" / "counted.debug"])
    run(["strip", "-s", "-o", out / "counted-split", out / "counted"])
    return out


@pytest.fixture(scope="module")
def server(split: Path) -> Iterator[str]:
    """Debian's debuginfod serving the split-off debug file on 127.0.0.1."""
    need(shutil.which("debuginfod") is not None, "debuginfod is not installed (make test installs it)")
    port = free_port()
    db = split / "debuginfod.sqlite"
    proc = subprocess.Popen(
        ["debuginfod", "-F", str(split / "served"), "-p", str(port), "-d", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    build_id = open_elf(str(split / "counted-split")).build_id
    try:
        deadline = time.monotonic() + 60
        while not _serves(f"{url}/buildid/{build_id}/debuginfo"):  # its first scan of the directory
            assert proc.poll() is None, "debuginfod exited"
            assert time.monotonic() < deadline, "debuginfod did not index the directory in 60 s"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def env(cache: Path, urls: str | None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "DEBUGINFOD_URLS"}
    e["XDG_CACHE_HOME"] = str(cache)
    if urls is not None:
        e["DEBUGINFOD_URLS"] = urls
    return e


def test_missing_debug_file_is_explained(split: Path, processes: Processes, tmp_path: Path) -> None:
    proc = processes.start(split / "counted-split", "loop")
    res = ctrace("target", f"pid:{proc.pid}", "--func", FUNC, env=env(tmp_path, None))
    assert res.code == 1, res.err
    build_id = open_elf(str(split / "counted-split")).build_id
    assert build_id
    wanted = f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug"
    error, hint = res.err.splitlines()
    assert f"no function matches {FUNC!r}" in error
    assert f"build-id {build_id}, debug link none; looked for {wanted}" in error
    binary = split / "counted-split"
    assert hint.startswith(f"hint: {binary} is not from a Debian package: put its debug file at {wanted}")
    assert "set DEBUGINFOD_URLS" in hint and "is stripped: only .dynsym" in hint
    assert "Traceback" not in res.err


def test_debian_package_named(processes: Processes, tmp_path: Path) -> None:
    """A Debian library's function it does not export: the hint names its -dbgsym package."""
    libz = "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13"
    need(os.path.exists(libz), "zlib1g is not installed")
    assert debuginfo.debian_package(libz) == "zlib1g"
    assert debuginfo.debian_package("/lib/x86_64-linux-gnu/libz.so.1.2.13") == "zlib1g"  # merged /usr
    assert debuginfo.debian_package(str(tmp_path / "nothing")) is None
    proc = processes.start(sys.executable, "-c", "import zlib, time; time.sleep(600)")
    res = ctrace("target", f"pid:{proc.pid}", "--lib", "libz", "--func", "inflate_fast", env=env(tmp_path, None))
    need(res.code != 0, "zlib1g's debug symbols are installed here: inflate_fast is found")
    assert res.code == 1 and "build-id " in res.err and "looked for /usr/lib/debug/.build-id/" in res.err, res.err
    assert "hint: install zlib1g-dbgsym (the debug symbols of package zlib1g" in res.err, res.err


def test_fetched_from_debuginfod_and_the_probe_fires(
    split: Path, server: str, processes: Processes, tmp_path: Path, bpftraces: list[Bpftrace]
) -> None:
    proc = processes.start(split / "counted-split", "loop")
    res = ctrace("target", f"pid:{proc.pid}", "--func", FUNC, "-o", "json", env=env(tmp_path, server))
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    (probe,) = t["probes"]
    build_id = t["binary"]["build_id"]
    fetched = tmp_path / "ctrace" / "debuginfod" / build_id / "debuginfo"
    assert fetched.read_bytes() == (split / "served" / "counted.debug").read_bytes()
    assert any("from a debuginfod server by build-id" in w for w in t["warnings"]), t["warnings"]
    symbols = {s.name: s.address for s in open_elf(str(split / "counted")).symbols()}
    assert probe["symbol"] == FUNC and probe["address"] == symbols[FUNC]
    # bcc does not read ctrace's cache: a stripped file, so a file offset with --unsafe
    assert probe["attach"] == "address" and "--unsafe" in probe["argv"]
    top = hex(load_base(proc.pid, split / "counted-split") + probe["address"])
    for bt in bpftraces:  # from the cache now; each version's line, run by that version
        printed = ctrace("target", f"pid:{proc.pid}", "--func", FUNC, "-o", "json", *bt.args, env=env(tmp_path, None))
        argv = printed.json()["targets"][0]["probes"][0]["argv"]
        assert argv[0] == bt.path and "--unsafe" in argv, argv
        seen = fire(argv, top, want=2)
        assert seen.fired, (bt.version, seen.stderr)
        assert seen.pids == {proc.pid} and not seen.warnings, (bt.version, seen.pids, seen.warnings)
    # Later runs find it in the cache, with no server at all.
    again = ctrace("target", f"pid:{proc.pid}", "--func", FUNC, "-o", "json", env=env(tmp_path, None))
    assert again.code == 0 and again.json()["targets"][0]["probes"][0]["address"] == symbols[FUNC], again.err
    listed = ctrace("symbols", str(split / "counted-split"), "-o", "json", env=env(tmp_path, None)).json()
    assert {"source": "debuginfod", "path": str(fetched)} in listed["debug_files"]


def test_a_cached_file_of_another_build_is_not_read(split: Path, processes: Processes, tmp_path: Path) -> None:
    """A server's answer is checked: a debug file whose build-id is not the binary's is ignored."""
    build_id = open_elf(str(split / "counted-split")).build_id
    assert build_id
    wrong = tmp_path / "ctrace" / "debuginfod" / build_id / "debuginfo"
    wrong.parent.mkdir(parents=True)
    shutil.copy(SRC / "counted.c", wrong)  # not even ELF
    proc = processes.start(split / "counted-split", "loop")
    res = ctrace("target", f"pid:{proc.pid}", "--func", FUNC, env=env(tmp_path, None))
    assert res.code == 1 and f"no function matches {FUNC!r}" in res.err, res.err
    run(["gcc", "-O2", "-g", "-o", wrong, SRC / "hello.c"])  # ELF, another build-id
    res = ctrace("target", f"pid:{proc.pid}", "--func", FUNC, env=env(tmp_path, None))
    assert res.code == 1 and f"no function matches {FUNC!r}" in res.err, res.err


def test_server_without_the_file_is_reported(split: Path, server: str, processes: Processes, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run(["gcc", "-O2", "-g", "-Wl,--build-id=sha1", "-o", other, SRC / "hello.c"])
    run(["strip", "-s", other])
    proc = processes.start(other)
    dead = f"http://127.0.0.1:{free_port()}"
    res = ctrace("target", f"pid:{proc.pid}", "--func", "hello", env=env(tmp_path, f"{server} {dead}"))
    assert res.code == 1, res.err
    assert f"debuginfod: {server}: HTTP 404 (no debug file for this build-id), {dead}: unreachable" in res.err
