"""Run inside a child PID namespace (as PID 1 there, by tests/test_pidns.py): start the counted
fixture in a grandchild namespace (the target) and in another (a decoy running the same
file), then run ctrace from here as the node agent would, and print what happened as JSON.

argv: COUNTED BPFTRACE MODE, MODE one of ``plan`` (the printed program run by hand) or an
``--action`` for ``--run``. PID 1 of a namespace reaps orphans only if it waits: it does.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def grandchild(binary: str) -> tuple[subprocess.Popen[bytes], int]:
    """``binary`` as PID 1 of a new PID namespace; its PID here."""
    proc = subprocess.Popen(["unshare", "-p", "-f", "--mount-proc", "--kill-child", binary])
    for _ in range(100):
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if kids and Path(f"/proc/{kids[0]}/exe").resolve() == Path(binary).resolve():
            return proc, int(kids[0])
        time.sleep(0.05)
    raise RuntimeError("the grandchild did not start")


def until_attached(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    """stdout and stderr up to bpftrace's Attach line (0.17 prints it on stdout, later ones on
    stderr). Read with os.read, as communicate() reads: nothing waits in a file object's buffer."""
    assert proc.stdout is not None and proc.stderr is not None
    seen = {proc.stdout.fileno(): b"", proc.stderr.fileno(): b""}
    open_ = set(seen)
    deadline = time.monotonic() + timeout
    while open_ and time.monotonic() < deadline and not any(b"\nAttach" in b"\n" + got for got in seen.values()):
        for fd in select.select(list(open_), [], [], 0.2)[0]:
            chunk = os.read(fd, 65536)
            seen[fd] += chunk
            if not chunk:
                open_.discard(fd)  # closed: it exited
    out, err = seen.values()
    return out.decode(), err.decode()


def exercise(argv: list[str], target: int, decoy: int) -> dict[str, Any]:
    """Start ``argv``, make target and decoy call classify() COUNT times, end the target;
    the command must then stop by itself."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    head_out, head_err = until_attached(proc)
    time.sleep(0.5)
    for pid in (target, decoy):
        os.kill(pid, signal.SIGUSR1)
    time.sleep(1.5)
    os.kill(target, signal.SIGUSR1)  # its second SIGUSR1 ends it
    ended = time.monotonic()
    try:
        out, err = proc.communicate(timeout=30)
        stopped = round(time.monotonic() - ended, 1)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        stopped = None
    return {"code": proc.returncode, "out": head_out + out, "err": head_err + err, "stopped_after": stopped}


def main() -> None:
    counted, bpftrace, mode = sys.argv[1:4]
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    target_ns, target = grandchild(counted)
    decoy_ns, decoy = grandchild(counted)
    ctrace = [sys.executable, "-m", "ctrace", "target", f"pid:{target}", "--func", "classify", "--bpftrace", bpftrace]
    report: dict[str, Any] = {"target": target, "decoy": decoy, "ns": os.stat("/proc/self/ns/pid").st_ino}
    try:
        if mode == "plan":
            plan = subprocess.run([*ctrace, "-o", "json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
            report["plan"] = {"code": plan.returncode, "out": plan.stdout, "err": plan.stderr}
            asked = [*ctrace, "--action", "count", "-o", "json"]
            count = subprocess.run(asked, capture_output=True, text=True, cwd=ROOT, timeout=120)
            report["count_plan"] = {"code": count.returncode, "out": count.stdout, "err": count.stderr}
            if plan.returncode == 0:
                argv = json.loads(plan.stdout)["targets"][0]["probes"][0]["argv"]
                report["run"] = exercise(argv, target, decoy)
        else:
            report["run"] = exercise([*ctrace, "--action", mode, "--run"], target, decoy)
    finally:
        for p in (target_ns, decoy_ns):
            p.kill()
            p.wait()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
