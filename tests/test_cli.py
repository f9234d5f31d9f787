"""The CLI as a user meets it: JSON contract, exit codes, one-line errors with hints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from ctrace.cli.main import program_name
from tests.conftest import ROOT, Built, Processes, ctrace, need


def assert_clean_error(res: object, code: int, *words: str) -> None:
    assert res.code == code, res  # type: ignore[attr-defined]
    err = res.err  # type: ignore[attr-defined]
    lines = err.strip().splitlines()
    assert lines[0].startswith("ctrace: error: "), err
    assert len(lines) == 2 and lines[1].startswith("hint: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in err


@pytest.mark.parametrize(
    ("argv0", "name"),
    [("/usr/local/bin/ctrace", "ctrace"), ("/root/.krew/bin/kubectl-ctrace", "kubectl ctrace"), ("", "ctrace")],
)
def test_program_name(argv0: str, name: str) -> None:
    assert program_name(argv0) == name


def test_target_json_contract(built: Built, processes: Processes) -> None:
    proc = processes.start(built["hello"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "hello", "-o", "json")
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    assert {"runtime", "pid", "nspid", "comm", "container", "pod", "binary", "probes"} <= set(t)
    assert (t["runtime"], t["pid"], t["nspid"], t["comm"]) == ("host", proc.pid, [proc.pid], "hello")
    assert t["container"] is None and t["pod"] is None
    b = t["binary"]
    assert b["path"] == str(built["hello"])
    assert b["host_path"] == f"/proc/{proc.pid}/root{built['hello']}"
    assert b["merged_path"] is None and b["stripped"] is False and b["language"] == "c"
    assert len(b["build_id"]) == 40
    (p,) = t["probes"]
    assert p["symbol"] == "hello" and isinstance(p["address"], int)
    assert p["argv"][:2] == ["bpftrace", "-e"] and f"@ctrace_pids[{proc.pid}] = 1;" in p["argv"][-1]
    assert f"uprobe:{b['host_path']}:hello " in p["argv"][-1]


def test_name_finds_every_process_of_that_name(built: Built, processes: Processes, tmp_path: Path) -> None:
    # Two copies under a name of their own, so no other process on the machine matches.
    name = f"tw-{uuid.uuid4().hex[:8]}"
    exe = tmp_path / name
    exe.write_bytes(built["hello"].read_bytes())
    exe.chmod(0o755)
    a, b = processes.start(exe), processes.start(exe)
    res = ctrace("target", name, "--func", "hello", "-o", "json")
    assert res.code == 0, res.err
    # Other test sessions on a shared machine may run their own twin-hello: count only ours.
    mine = [t["pid"] for t in res.json()["targets"] if t["binary"]["path"] == str(exe)]
    assert sorted(mine) == sorted([a.pid, b.pid])


def test_thread_id_reports_its_process(built: Built, processes: Processes) -> None:
    proc = processes.start(built["cilium-agent"])
    tids = sorted(int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid)
    assert tids, "a Go program runs several threads"
    res = ctrace("target", str(tids[0]), "--func", "regenerate", "-o", "json")
    assert res.code == 0, res.err
    assert [t["pid"] for t in res.json()["targets"]] == [proc.pid]


def test_deleted_binary_uses_proc_exe(built: Built, processes: Processes, tmp_path: Path) -> None:
    exe = tmp_path / "doomed"
    exe.write_bytes(built["hello"].read_bytes())
    exe.chmod(0o755)
    proc = processes.start(exe)
    exe.unlink()
    res = ctrace("target", f"pid:{proc.pid}", "--func", "hello", "-o", "json")
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    assert t["binary"]["host_path"] == f"/proc/{proc.pid}/exe"
    assert t["binary"]["deleted"] is True
    assert any("deleted" in w for w in t["warnings"])


def test_no_match_shows_closest(built: Built, processes: Processes) -> None:
    proc = processes.start(built["hello"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "helo")
    assert_clean_error(res, 1, "no function matches 'helo'", "closest names: hello")


def test_stripped_binary_says_so(built: Built, processes: Processes) -> None:
    proc = processes.start(built["hello-stripped"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "hello")
    assert_clean_error(res, 1, "stripped", ".dynsym")


def test_stripped_rdynamic_still_traceable(built: Built, processes: Processes) -> None:
    proc = processes.start(built["hello-dyn-stripped"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "hello", "-o", "json")
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    assert t["binary"]["stripped"] is True
    assert any("stripped" in w for w in t["warnings"])


def test_symbols_json(built: Built) -> None:
    res = ctrace("symbols", str(built["stack-unwind"]), "--func", "func_*", "-o", "json")
    assert res.code == 0, res.err
    data = res.json()
    assert data["binary"]["stripped"] is False
    assert [s["name"] for s in data["symbols"]] == ["func_c", "func_b", "func_a"]
    assert all(set(s) == {"name", "address", "size", "source", "demangled"} for s in data["symbols"])
    assert set(data) == {"binary", "sources", "debug_files", "symbols"}


def test_symbols_of_a_target(built: Built, processes: Processes) -> None:
    proc = processes.start(built["acme"])
    res = ctrace("symbols", f"pid:{proc.pid}", "--func", "handshake", "-o", "json")
    assert res.code == 0, res.err
    assert [s["name"] for s in res.json()["symbols"]] == ["_ZN4acme3net4Conn9handshakeEi"]


def test_ns_json_on_host_process() -> None:
    res = ctrace("ns", str(os.getpid()), "-o", "json")
    assert res.code == 0, res.err
    d = res.json()
    assert d["pid"] == os.getpid() and d["nspid"] == [os.getpid()]
    assert d["in_child_pid_namespace"] is False
    assert d["namespaces"]["pid"] == os.stat("/proc/self/ns/pid").st_ino
    assert {"nstgid", "nspgid", "nssid"} <= set(d)


def test_ns_in_child_pid_namespace() -> None:
    need(os.geteuid() == 0, "unshare --pid needs root")
    child = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sleep", "30"])
    try:
        import time

        for _ in range(50):
            kids = Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()
            if kids:
                break
            time.sleep(0.05)
        inner = int(kids[0])
        for _ in range(50):  # the forked child execs sleep
            if Path(f"/proc/{inner}/comm").read_text().strip() == "sleep":
                break
            time.sleep(0.05)
        d = ctrace("ns", str(inner), "-o", "json").json()
        assert d["nspid"] == [inner, 1]
        assert d["in_child_pid_namespace"] is True
    finally:
        child.kill()
        child.wait()


def test_ps_json(built: Built, processes: Processes) -> None:
    proc = processes.start(built["stack-unwind"])
    res = ctrace("ps", "stack-unwind", "-o", "json")
    assert res.code == 0, res.err
    rows = {p["pid"]: p for p in res.json()["processes"]}
    assert rows[proc.pid]["exe"] == str(built["stack-unwind"])
    assert rows[proc.pid]["nspid"] == [proc.pid]
    assert set(rows[proc.pid]) >= {"pid", "comm", "exe", "nspid", "container", "pod"}


def test_console_scripts_name_themselves() -> None:
    bindir = Path(sys.executable).parent
    for script, prog in (("ctrace", "ctrace"), ("kubectl-ctrace", "kubectl ctrace")):
        exe = bindir / script
        need(exe.exists(), f"{script} is not installed in this environment (pip install -e .)")
        out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
        assert out.startswith(f"usage: {prog} ")


@pytest.mark.parametrize("argv", [["--help"], [], ["target", f"pid:{os.getpid()}", "--func", "x"], ["version"]])
def test_help_does_not_import_heavy_modules(argv: list[str]) -> None:
    """``ctrace --help`` (and a host target) must not pay for docker, kubernetes, pyelftools or psutil.

    The child prints its modules on the way out (atexit), whatever main() did; a child that
    could not import ctrace at all fails the return-code and output checks."""
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print('MODULES ' + json.dumps(sorted(sys.modules))))\n"
        "from ctrace.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode in (0, 1), out.stderr  # no function x: a clean error, not a crash
    assert "Traceback" not in out.stderr
    if argv[:1] == ["--help"] or not argv:
        assert out.stdout.startswith("usage: ctrace"), out.stdout
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("MODULES ")]
    modules = set(json.loads(line.removeprefix("MODULES ")))
    assert "ctrace.cli" in modules
    assert not modules & {"docker", "kubernetes", "elftools", "psutil", "yaml", "capstone"}


def test_version_names_ctrace_bpftrace_and_kernel() -> None:
    import platform

    from ctrace import __version__

    res = ctrace("--version")
    assert res.code == 0
    lines = res.out.splitlines()
    assert lines[0] == f"ctrace {__version__}"
    assert lines[1].startswith("bpftrace ")
    assert lines[2] == f"kernel {platform.release()}"
