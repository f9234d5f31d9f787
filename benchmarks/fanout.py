"""`make bench`, the fan-out (issue 21), on the local cluster of hack/cluster.sh, agents warm:

- Enter to the first event of a pod on another node (every node is another machine here);
- 3 pods at 1,000 calls/s each for 10 s, per-call events: each pod's sequence numbers (tick's
  arg0) with nothing missing, and the merged total equal to the sum of the per-pod rows;
  the same with in-kernel counts (--action count);
- the client's peak RSS (its own wait4 rusage).

    python -m benchmarks.fanout [--runs N]     (needs `hack/cluster.sh up`; says so otherwise)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests import fanout_cluster as fc

NS = "fanout-bench"
RATE = 1000
PODS = 3
EVENT = re.compile(r"^\[(\S+) ([\w.-]+)/([\w.-]+) (\S+)\] pid \d+ tick\((0x[0-9a-f]+)")


def client(kubeconfig: Path, *args: str) -> tuple[list[str], list[str], int, int, float]:
    """stdout, stderr, exit code, peak RSS (KiB), seconds to the first event line."""
    cmd = [sys.executable, "-m", "ctrace", "target", "deploy/tick", "-n", NS, "--func", "tick", "--run"]
    start = time.monotonic()
    proc = subprocess.Popen(
        [*cmd, *args, "--kubeconfig", str(kubeconfig), "--agent-namespace", fc.AGENT_NS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=fc.ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out, first = [], -1.0
    for line in proc.stdout:
        if first < 0 and EVENT.match(line):
            first = time.monotonic() - start
        out.append(line.rstrip("\n"))
    err = proc.stderr.read().splitlines()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return out, err, proc.returncode, usage.ru_maxrss, first


def first_event(kubeconfig: Path, runs: int) -> list[float]:
    """Enter (the client's start) to its first event line, a fresh client each time."""
    times = []
    for _ in range(runs):
        out, err, code, _, first = client(kubeconfig, "--action", "args", "--duration", "3")
        assert code == 0 and first > 0, "\n".join(out[-5:] + err)
        times.append(first)
    return times


def lossless(kubeconfig: Path) -> dict[str, Any]:
    out, err, code, rss, _ = client(kubeconfig, "--action", "args", "--duration", "10")
    assert code == 0, "\n".join(err)
    seqs: dict[str, list[int]] = {}
    for line in out:
        m = EVENT.match(line)
        if m:
            seqs.setdefault(f"{m.group(1)} {m.group(3)}", []).append(int(m.group(5), 16))
    gaps = {k: (max(v) - min(v) + 1) - len(set(v)) for k, v in seqs.items()}
    rows = {tuple(r.split()[:2]): int(r.split()[-1]) for r in out if r.split()[:1] and not EVENT.match(r)
            and r.split()[-1].isdigit() and r.split()[0] != "NODE"}  # fmt: skip
    total = rows.pop(next(k for k in rows if k[0] == "total"))
    return {"pods": len(seqs), "events": sum(len(v) for v in seqs.values()), "missing": sum(gaps.values()),
            "per_pod": rows, "merged": total, "rss_kib": rss}  # fmt: skip


def counted(kubeconfig: Path) -> dict[str, Any]:
    out, err, code, rss, _ = client(kubeconfig, "--action", "count", "--duration", "10")
    assert code == 0, "\n".join(err)
    rows = [r.split() for r in out if r.split() and r.split()[-1].isdigit()]
    per = {(r[0], r[1]): int(r[-1]) for r in rows if r[0] != "total"}
    (total,) = [int(r[-1]) for r in rows if r[0] == "total"]
    return {"per_pod": per, "merged": total, "rss_kib": rss}


def report(times: list[float], events: dict[str, Any], counts: dict[str, Any]) -> None:
    ms = [t * 1000 for t in times]
    per, cper = events["per_pod"], counts["per_pod"]
    nodes = ", ".join(f"{k[0]} {k[1]}: {v}" for k, v in sorted(cper.items()))
    rows = [
        (
            f"Enter to the first event (median of {len(ms)})",
            f"{statistics.median(ms):.0f} ms ({min(ms):.0f}-{max(ms):.0f})",
        ),
        (f"per-call events, {RATE}/s x {PODS} pods x 10 s", f"{events['events']} from {events['pods']} pods"),
        ("calls missing from the pods' sequences", str(events["missing"])),
        ("merged events == sum of per-pod rows", f"{events['merged']} == {sum(per.values())}"),
        ("--action count: merged == sum of per-node counts", f"{counts['merged']} == {sum(cper.values())} ({nodes})"),
        (
            "client peak RSS (events run, count run)",
            f"{events['rss_kib'] / 1024:.0f} MiB, {counts['rss_kib'] / 1024:.0f} MiB",
        ),
    ]
    print(f"| fan-out: {PODS} pods of tick on 2 nodes, agents warm | measured |\n|---|---|")
    print("\n".join(f"| {what} | {value} |" for what, value in rows))


def main() -> int:
    import importlib

    local = importlib.import_module("tests.cluster")  # the cluster issue's session helpers (hack/cluster.sh)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    if not local.CLUSTER_SH.exists() or not local.is_up():
        print("benchmarks.fanout: the local cluster is not up (hack/cluster.sh up): skipped")
        return 0
    cluster = local.up(True)
    fc.tick_image(cluster)
    fc.agents(cluster)
    cluster.kubectl("create", "namespace", NS, check=False)
    cluster.apply(fc.deployment("tick", NS, PODS, RATE))
    cluster.rollout("deploy/tick", NS)
    try:
        client(cluster.kubeconfig, "--action", "count", "--duration", "2")  # agents warm, images cached
        times = first_event(cluster.kubeconfig, opts.runs)
        events = lossless(cluster.kubeconfig)
        counts = counted(cluster.kubeconfig)
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
    report(times, events, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
