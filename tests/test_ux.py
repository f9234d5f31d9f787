"""What a daily user trips on: starting, words, wide output, libraries, silence, and hints
that run as written (every ctrace command a hint names is run here)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, Built, Processes, Result, ctrace, need, need_bpftrace, run
from tests.k8s_api import ApiServer, pod

# -- starting ------------------------------------------------------------------------


def test_bare_ctrace_prints_help_like_kubectl() -> None:
    res = ctrace()
    assert res.code == 0 and res.err == ""
    assert res.out.startswith("usage: ctrace ") and "examples:" in res.out
    commands = re.findall(r"^    (\w+) ", res.out, re.M)
    assert commands == ["target", "symbols", "ns", "ps", "completion", "version"]
    assert "__complete" not in res.out


def test_version_command_and_flag_agree() -> None:
    flag, command = ctrace("--version"), ctrace("version")
    assert flag.code == command.code == 0 and flag.out == command.out
    data = ctrace("version", "-o", "json").json()
    assert set(data) == {"ctrace", "bpftrace", "kernel"} and command.out.startswith(f"ctrace {data['ctrace']}\n")


def test_global_flags_anywhere(built: Built, processes: Processes) -> None:
    proc = processes.start(built["hello"])
    first = ctrace("-o", "json", "--no-cache", "target", f"pid:{proc.pid}", "--func", "hello")
    after = ctrace("target", f"pid:{proc.pid}", "--func", "hello", "-o", "json", "--no-cache", "--proc-root", "/proc")
    assert first.code == after.code == 0, (first.err, after.err)
    assert first.json() == after.json()
    # --debug after the command shows the traceback a bug would have.
    res = ctrace("ns", "99999999", "--debug")
    assert res.code != 0 and "Traceback" in res.err
    # a --proc-root that is no procfs is refused after the command too
    bad = ctrace("ps", "--proc-root", "/tmp")
    assert bad.code == 3 and "/tmp is not a proc filesystem" in bad.err


@pytest.mark.parametrize(
    ("argv", "message", "hint"),
    [
        (["trget"], "unknown command 'trget'", "did you mean 'target'? see 'ctrace --help'"),
        (["-o", "json", "symbls", "x"], "unknown command 'symbls'", "did you mean 'symbols'?"),
        (["target", "x", "--fucn", "y"], "unknown flag '--fucn'", "did you mean --func? see 'ctrace target --help'"),
        (["ps", "--contianer", "x"], "unknown flag '--contianer'", "did you mean --container?"),
        (["target", "x"], "--func is required", "'ctrace symbols x'"),
        (["target", "x", "--func", "f", "--duration", "3"], "--duration needs --run", "add --run"),
        (["target", "x", "--func", "f", "--run", "-o", "json"], "--run shows what bpftrace prints", "drop -o json"),
        (["target", "x", "--func", "f", "--run", "-q"], "--run shows what bpftrace prints", "drop -q"),
        (["ns", "abc"], "'abc' is not a PID", "'ctrace ns 1'"),
    ],
)
def test_mistakes_get_one_line_and_a_hint(argv: list[str], message: str, hint: str) -> None:
    res = ctrace(*argv)
    assert res.code == 2, res
    lines = res.err.splitlines()
    assert len(lines) == 2 and message in lines[0] and hint in lines[1], res.err
    assert "__complete" not in res.err


# -- output ----------------------------------------------------------------------------


def test_ps_wide_adds_user_start_and_memory(built: Built, processes: Processes) -> None:
    import psutil

    proc = processes.start(built["stack-unwind"])
    text = ctrace("ps", "stack-unwind").out.splitlines()
    wide = ctrace("ps", "stack-unwind", "-o", "wide").out.splitlines()
    assert "USER" not in text[0] and wide[0].split()[9:13] == ["USER", "START", "RSS", "EXE"]
    (row,) = [line.split() for line in wide if line.split()[0] == str(proc.pid)]
    me = psutil.Process(proc.pid)
    assert row[8] == me.username() and row[9] == time.strftime("%H:%M", time.localtime(me.create_time()))
    assert row[10].endswith(("Ki", "Mi")) and row[11] == str(built["stack-unwind"])
    (data,) = [p for p in ctrace("ps", "stack-unwind", "-o", "json").json()["processes"] if p["pid"] == proc.pid]
    assert data["user"] == me.username() and abs(data["started"] - me.create_time()) < 1
    assert 0 < data["rss"] < 64 << 20


def test_symbols_wide_says_how_bpftrace_attaches(built: Built) -> None:
    res = ctrace("symbols", str(built["names"]), "-o", "wide")
    assert res.code == 0, res.err
    head, *rows = res.out.splitlines()[1:]
    assert head.split() == ["ADDRESS", "OFFSET", "SIZE", "SOURCE", "ATTACH", "NAME"]
    attach = {r.split()[5]: r.split()[4] for r in rows}
    # pkg.(*T).m would, as a bpftrace glob, also reach pkg.(*UT).m: only an address is exact.
    assert attach["pkg.(*T).m"] == "address" and attach["main"] == "name"
    from ctrace.elf.reader import open_elf

    elf = open_elf(str(built["names"]))
    for r in rows:
        address, offset = int(r.split()[0], 16), r.split()[1]
        assert offset == hex(elf.vaddr_to_offset(address) or 0)


# -- libraries -------------------------------------------------------------------------


def test_lib_libc_means_libc_so_6(built: Built, processes: Processes) -> None:
    """A process mapping libc.so.6 and libcrypt/libm...: --lib libc takes the exact stem."""
    proc = processes.start(built["hello-dyn"])
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "libc.so.6" in maps
    res = ctrace("target", f"pid:{proc.pid}", "--lib", "libc", "--func", "malloc", "-o", "json")
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    assert os.path.basename(t["binary"]["path"]) == "libc.so.6"


def test_lib_prefers_stem_over_prefix() -> None:
    from ctrace.proc import mapped

    assert mapped.stem("/usr/lib/x86_64-linux-gnu/libc.so.6") == "libc"
    assert mapped.stem("/lib/libc-2.31.so") == "libc"
    assert mapped.stem("/usr/lib/libcrypto.so.3") == "libcrypto"
    assert mapped.stem("/usr/lib/libjemalloc.so.2 (deleted)") == "libjemalloc"


def test_func_in_a_library_names_it(built: Built, processes: Processes) -> None:
    proc = processes.start(built["hello-dyn"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "malloc")
    assert res.code == 1
    assert f"'malloc' is in libc.so.6, which process {proc.pid} maps" in res.err
    (again,) = hint_commands(res)
    assert again == f"ctrace target pid:{proc.pid} --lib libc --func malloc"
    ran = run_hint(again)
    assert ran.code == 0 and "libc.so.6" in ran.out, ran.err


def test_substring_match_is_said(built: Built, processes: Processes) -> None:
    proc = processes.start(built["stack-unwind"])
    res = ctrace("target", f"pid:{proc.pid}", "--func", "unc_", "-o", "json")
    assert res.code == 0, res.err
    (t,) = res.json()["targets"]
    assert any("no function is named 'unc_': --func took the 3 whose name contains it" in w for w in t["warnings"])
    exact = ctrace("target", f"pid:{proc.pid}", "--func", "func_a", "-o", "json").json()["targets"][0]
    assert not any("contains it" in w for w in exact["warnings"])


# -- silence that hides failure ------------------------------------------------------


def test_quiet_on_a_pod_elsewhere_without_an_agent_fails(tmp_path: Path) -> None:
    """The fake API server (tests/k8s_api.py): a pod on a node that is not this machine and has no
    agent, which the local cluster cannot give (its nodes share this host, and run the agent)."""
    server = ApiServer()
    server.pods = [
        pod("far", "default", "containerd://" + "ef" * 32, "node-z", containers=("app", "sidecar")),
    ]
    try:
        cfg = server.kubeconfig(tmp_path / "config")
        env = {**os.environ, "KUBECONFIG": str(cfg)}
        res = ctrace("target", "pod/far", "-c", "sidecar", "--func", "main", "-q", env=env)
        assert res.code == 1 and res.out == ""
        assert "pod default/far runs on node node-z, and no ctrace node agent runs there" in res.err
        shown = ctrace("target", "pod/far", "--func", "main", env=env)
        assert shown.code == 0 and "Defaulted container 'app' out of: app, sidecar" in shown.out
    finally:
        server.stop()


def test_run_says_when_the_target_exits(built: Built, tmp_path: Path) -> None:
    need_bpftrace()
    exe = tmp_path / "short-lived"
    shutil.copy(built["hello"], exe)
    proc = subprocess.Popen([str(exe)], stdout=subprocess.DEVNULL)
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "ctrace", "target", f"pid:{proc.pid}", "--func", "hello", "--run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        time.sleep(3)  # attached and firing
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _, err = child.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert child.returncode == 1, err
    assert f"process {proc.pid} (short-lived) exited while it was traced" in err
    (hinted,) = hint_commands(Result(child.returncode, "", err))
    assert hinted == "ctrace ps short-lived"
    ran = run_hint(hinted)  # runs, and says truthfully that no such process is left
    assert ran.code == 1 and "no process named 'short-lived'" in ran.err, ran


def test_ps_as_another_user_says_what_it_hides(tmp_path: Path) -> None:
    need(os.geteuid() == 0, "switching to another user needs root")
    need(shutil.which("setpriv") is not None, "setpriv is not installed (util-linux)")
    # A copy of the source nobody can read, run by nobody with the same interpreter.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "ctrace", src / "ctrace", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    os.chmod(tmp_path, 0o755)
    for d, _, files in os.walk(src):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "ctrace", "ps"]
    env = {"PYTHONPATH": str(src), "CTRACE_PURE": "1", "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=src, timeout=60)
    need("No module named" not in out.stderr, f"this interpreter is not readable by nobody: {out.stderr[-200:]}")
    assert "warning:" in out.stderr and "processes are not listed" in out.stderr, out
    assert "(run ctrace as root)" in out.stderr
    assert "Traceback" not in out.stderr


def test_ps_name_of_a_container_points_at_container(ux_container: str) -> None:
    res = ctrace("ps", ux_container)
    assert res.code == 1 and "no process is named" in res.err and "but a container is" in res.err
    (hinted,) = hint_commands(res)
    assert hinted == f"ctrace ps --container {ux_container}"
    ran = run_hint(hinted)
    assert ran.code == 0 and "/hello" in ran.out, ran


def test_ps_container_prefix_hint_is_one_ps_runs(ux_container: str) -> None:
    """A prefix naming two containers: the hint is a ps command (not target's --all / --runtime)."""
    image = run(["docker", "inspect", "-f", "{{.Config.Image}}", ux_container]).stdout.strip()
    twin = f"{ux_container}-twin"
    run(["docker", "run", "-d", "--name", twin, image])
    try:
        res = ctrace("ps", "--container", ux_container[:-2])
        assert res.code == 2 and "matches 2 containers" in res.err, res
        assert "--all" not in res.err and "--runtime" not in res.err
        (hinted,) = hint_commands(res)
        ran = run_hint(hinted)
        assert ran.code == 0 and "/hello" in ran.out, ran
    finally:
        subprocess.run(["docker", "rm", "-f", twin], capture_output=True)


# -- hints run as written ----------------------------------------------------------------


def hint_commands(res: Result) -> list[str]:
    """The ctrace commands a hint names ('...' quoted)."""
    hints = [line for line in res.err.splitlines() if line.startswith("hint: ")]
    return [c for h in hints for c in re.findall(r"'((?:kubectl )?ctrace [^']*)'", h)]


def run_hint(command: str, env: dict[str, str] | None = None) -> Result:
    argv = shlex.split(command)
    if argv[0] == "kubectl":
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        return Result(out.returncode, out.stdout, out.stderr)
    return ctrace(*argv[1:], env=env)


def error_scenarios(built: Built, processes: Processes) -> list[list[str]]:
    hello = processes.start(built["hello"])
    return [
        ["trget"],
        ["target", "x", "--fucn", "y"],
        ["target", f"pid:{hello.pid}"],
        ["target"],
        ["target", f"pid:{hello.pid}", "--func", "zzzqqqxxx"],
        ["ns", "abc"],
        ["ps", "no-such-process-here"],
        ["target", "no-such-process-here", "--func", "f"],
        ["target", "pid:999999999", "--func", "f"],
        ["ns", "999999999"],
        ["symbols", "/no/such/file"],
    ]


def test_every_hint_runs_as_written(built: Built, processes: Processes) -> None:
    ran: list[str] = []
    for argv in error_scenarios(built, processes):
        res = ctrace(*argv)
        assert res.code != 0 and "hint: " in res.err, (argv, res)
        for command in hint_commands(res):
            got = run_hint(command)
            # A runnable hint parses (no usage error) and ends in an answer, not a traceback.
            assert got.code != 2 and "Traceback" not in got.err, (argv, command, got)
            ran.append(command)
    print("\n".join(["hints run:", *sorted(set(ran))]))
    assert len(set(ran)) >= 5


def test_hints_under_kubectl_name_kubectl_ctrace() -> None:
    need(shutil.which("kubectl") is not None, "kubectl is not installed (make test installs it)")
    bindir = Path(sys.executable).parent
    need((bindir / "kubectl-ctrace").exists(), "kubectl-ctrace is not installed in the venv")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "KUBECONFIG": "/nonexistent"}
    out = subprocess.run(
        ["kubectl", "ctrace", "target", "pid:999999999", "--func", "f"], capture_output=True, text=True, env=env
    )
    res = Result(out.returncode, out.stdout, out.stderr)
    assert res.code == 1 and "kubectl ctrace: error:" in res.err
    (command,) = hint_commands(res)
    assert command == "kubectl ctrace ps"
    got = run_hint(command, env)
    assert got.code == 0 and got.out.startswith("PID "), got


# Hints the tests above produce and run (each test checks its own).
RUN_ELSEWHERE = [
    "ctrace ps --container ctrace-ux-st1",  # test_ps_name_of_a_container_points_at_container
    "ctrace target pid:1 --lib libc --func malloc",  # test_func_in_a_library_names_it
    "ctrace symbols x",  # test_mistakes_get_one_line_and_a_hint
    "ctrace ns 1",  # the same
    "ctrace target --help",  # the same
]


def test_every_ctrace_hint_in_the_source_is_exercised(built: Built, processes: Processes) -> None:
    """Each 'ctrace ...' spelt out in ctrace/'s source is a hint some test produces and runs."""
    produced = set(RUN_ELSEWHERE)
    for argv in error_scenarios(built, processes):
        produced.update(hint_commands(ctrace(*argv)))
    templates = set()
    for path in (ROOT / "ctrace").rglob("*.py"):
        templates.update(t for t in re.findall(r"'(ctrace [^']*)'", path.read_text()) if '"' not in t)
    missing = []
    for template in sorted(templates):
        rx = "".join(".+" if p.startswith("{") else re.escape(p) for p in re.split(r"(\{[^}]*\})", template))
        if not any(re.fullmatch(rx, c) for c in produced):
            missing.append(template)
    assert not missing, f"hints no test runs: {missing}"


def test_every_skip_goes_through_need() -> None:
    """Under CI=true a skip of real work is a failure; a bare pytest.skip would dodge that rule."""
    found = []
    for path in (ROOT / "tests").glob("*.py"):
        text = path.read_text()
        for word in ("pytest.skip(", "importorskip(", "pytest.mark.skip(", "skipif("):
            if path.name == "test_ux.py":
                continue  # this test names them
            if word in text and not (path.name == "conftest.py" and word == "pytest.skip("):
                found.append(f"{path.name}: {word}")
    assert found == [], found  # the kind suite too: on kind, or on the local cluster (hack/cluster.sh)


def test_output_names_no_repository_path_and_no_seed(built: Built, processes: Processes) -> None:
    """What a user who installed the wheel reads: no source-tree paths, no internal names."""
    proc = processes.start(built["hello"])
    outputs = [ctrace(), ctrace("target", f"pid:{proc.pid}", "--func", "hello", "-o", "wide", "--tool", "perf")]
    outputs += [ctrace(cmd, "--help") for cmd in ("target", "symbols", "ns", "ps", "completion", "version")]
    outputs.append(ctrace("target", f"pid:{proc.pid}", "--func", "nope"))
    for res in outputs:
        text = (res.out + res.err).lower()
        for word in ("seed", "hack/", "manifests/", "kubectl apply -f"):
            assert word not in text, (word, res)


# resolvers/ modules another helper was editing while issue 16 removed the figures (in its report).
FIGURES_LEFT = {"engine.py", "host.py", "kubernetes.py"}


def test_comments_quote_no_timings() -> None:
    """Figures go stale in comments: they belong in benchmarks/README.md and the CHANGELOG."""
    timing = re.compile(r"\b\d+(\.\d+)? ?(ms|us|µs)\b")
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in (ROOT / "ctrace").rglob("*.py")
        if path.name not in FIGURES_LEFT
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if timing.search(line)
    ]
    assert not found, "\n".join(found)
