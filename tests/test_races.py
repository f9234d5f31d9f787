"""Resolving targets that start and exit underneath: every answer is right or a clean error."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

from ctrace.errors import CtraceError
from ctrace.plan import targets
from ctrace.plan.request import Request
from ctrace.resolvers import Context
from tests.conftest import Built


def churn(exe: Path, stop: threading.Event, started: list[int]) -> None:
    """Start copies of ``exe`` that live 0-40 ms each, until told to stop."""
    n = 0
    while not stop.is_set():
        proc = subprocess.Popen([str(exe)], stdout=subprocess.DEVNULL)
        started.append(proc.pid)
        time.sleep((n % 5) * 0.01)
        proc.kill()
        proc.wait()
        n += 1


def test_short_lived_processes(built: Built, tmp_path: Path) -> None:
    name = f"race-{uuid.uuid4().hex[:8]}"
    exe = tmp_path / name
    exe.write_bytes(built["hello"].read_bytes())
    exe.chmod(0o755)
    ctx = Context(self_pid=os.getpid())
    stop = threading.Event()
    started: list[int] = []
    threads = [threading.Thread(target=churn, args=(exe, stop, started)) for _ in range(2)]
    for t in threads:
        t.start()
    counts = {"resolved": 0, "clean error": 0}
    try:
        for _ in range(200):
            try:
                result = targets.plan(Request(name, ("hello",)), ctx)
            except CtraceError as err:
                assert err.hint, err.message
                counts["clean error"] += 1
                continue
            for target in result.targets:
                assert target.process.pid in started
                assert target.binary.path == str(exe)
                assert target.probes and target.probes[0].symbol == "hello"
            counts["resolved"] += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    print(f"race loop: {counts} over {len(started)} processes")
    assert sum(counts.values()) == 200
    assert counts["resolved"] > 0  # the loop did see live processes
