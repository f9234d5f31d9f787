"""Labelled events and aggregates merged across pods (pure: objects in, text out).

Every event and aggregate row carries node, namespace, pod and container (PROTOCOL.md):
the agent fills what it knows and the client what it asked for, so a line can always be
told apart from its replica's."""

from __future__ import annotations

import json

from ctrace.record import TYPE_CHECKING
from ctrace.run.stacks import printable

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from ctrace.fanout.members import Member

    Row = dict[str, object]

LABELS = ("node", "namespace", "pod", "container")
TOP = 10  # merged stacks printed; --folded and --flamegraph keep them all


def labelled(obj: Mapping[str, object], member: Member) -> Row:
    """An agent's event or row with the labels the client knows filled in where missing."""
    out = dict(obj)
    for key, value in zip(LABELS, (member.node, member.namespace, member.name, member.container)):
        if not out.get(key):
            out[key] = value
    return out


def prefix(row: Mapping[str, object]) -> str:
    return printable(f"[{row.get('node')} {row.get('namespace')}/{row.get('pod')} {row.get('container')}]")


def event_text(event: Mapping[str, object]) -> list[str]:
    """One event as text lines, each starting with its labels."""
    head = prefix(event)
    if "text" in event:
        return [f"{head} {printable(str(event['text']))}"]
    call = f"pid {event.get('pid')} {printable(str(event.get('func', '')))}"
    if "args" in event:
        args = event.get("args") or []
        call += f"({', '.join(printable(str(a)) for a in _seq(args))})"
    if "retval" in event:
        call += f" = {printable(str(event['retval']))}"
    lines = [f"{head} {call}"]
    lines.extend(f"{head}     {printable(str(f))}" for f in _seq(event.get("frames") or []))
    return lines


def event_json(event: Mapping[str, object]) -> str:
    return json.dumps(event, sort_keys=True)


def _seq(value: object) -> Sequence[object]:
    return value if isinstance(value, list) else []


def _count(row: Mapping[str, object]) -> int:
    n = row.get("count", 0)
    return n if isinstance(n, int) else 0


def _buckets(row: Mapping[str, object]) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    for b in _seq(row.get("buckets")):
        if isinstance(b, list) and len(b) == 3:
            low, high, n = b
            out[(low, high)] = out.get((low, high), 0) + n
    return out


def _pod_key(row: Mapping[str, object]) -> tuple[str, str, str]:
    return (str(row.get("node")), f"{row.get('namespace')}/{row.get('pod')}", str(row.get("container")))


class Merged:
    """Aggregate rows of every pod's run, kept until the end."""

    def __init__(self) -> None:
        self.action = ""
        self.rows: list[Row] = []
        self._events: dict[tuple[str, str, str, str], int] = {}

    def add(self, action: str, rows: Iterable[Row]) -> None:
        self.action = self.action or action
        self.rows.extend(rows)

    def event(self, event: Row) -> None:
        """A per-call event counted (stack, args): their runs end with a table of calls too."""
        self.action = self.action or "events"
        key = (*_pod_key(event), str(event.get("func", "")))
        self._events[key] = self._events.get(key, 0) + 1

    def per_pod(self) -> dict[tuple[str, str, str, str], Row]:
        """(node, pod, container, func) -> the pod's rows summed over its PIDs."""
        out: dict[tuple[str, str, str, str], Row] = {k: {"count": n} for k, n in self._events.items()}
        for row in self.rows:
            key = (*_pod_key(row), str(row.get("func", "")))
            into = out.setdefault(key, {"count": 0, "buckets": {}})
            into["count"] = _count(into) + (_count(row) or sum(_buckets(row).values()))
            merged = into["buckets"]
            assert isinstance(merged, dict)
            for k, n in _buckets(row).items():
                merged[k] = merged.get(k, 0) + n
        return out

    def totals(self) -> dict[str, int]:
        """func -> calls over every pod."""
        out: dict[str, int] = {}
        for (_, _, _, func), row in self.per_pod().items():
            out[func] = out.get(func, 0) + _count(row)
        return out

    def table(self) -> list[str]:
        """Per-pod rows and a total per function; stacks add the top merged stacks."""
        per = self.per_pod()
        if not per:
            return ["ctrace: no calls were recorded on any pod"]
        cols = ["NODE", "POD", "CONTAINER", "FUNCTION", "CALLS"] + (["P50", "P99"] if self.action == "latency" else [])
        body: list[list[str]] = []
        for (node, pod, container, func), row in sorted(per.items()):
            body.append([node, pod, container, func, str(_count(row)), *self._spread(row)])
        pods = len({k[:3] for k in per})
        for func, n in sorted(self.totals().items()):
            merged: dict[tuple[int, int], int] = {}
            for (_, _, _, f), row in per.items():
                if f == func:
                    for k, c in _as_buckets(row).items():
                        merged[k] = merged.get(k, 0) + c
            spread = self._spread({"buckets": merged})
            body.append(["total", f"{pods} pod{'s' * (pods != 1)}", "", func, str(n), *spread])
        lines = _columns([cols, *body])
        if self.action == "stacks":
            lines.extend(self._stacks())
        return lines

    def _spread(self, row: Mapping[str, object]) -> list[str]:
        if self.action != "latency":
            return []
        buckets = _as_buckets(row)
        return [_quantile(buckets, 0.5), _quantile(buckets, 0.99)]

    def _stacks(self) -> list[str]:
        merged: dict[tuple[str, tuple[str, ...]], dict[str, int]] = {}
        for row in self.rows:
            key = (str(row.get("func", "")), tuple(str(f) for f in _seq(row.get("frames"))))
            by_pod = merged.setdefault(key, {})
            pod = f"{row.get('node')} {row.get('namespace')}/{row.get('pod')}"
            by_pod[pod] = by_pod.get(pod, 0) + _count(row)
        ranked = sorted(merged.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
        out = ["", f"ctrace: the top {min(TOP, len(ranked))} of {len(ranked)} distinct stacks, merged over pods:"]
        for (func, frames), by_pod in ranked[:TOP]:
            pods = ", ".join(f"{p}: {n}" for p, n in sorted(by_pod.items()))
            out.extend(["", f"{sum(by_pod.values()):>8}  {printable(func)}  ({printable(pods)})"])
            out.extend(f"          {printable(f)}" for f in frames)
        return out

    def folded(self) -> dict[tuple[str, ...], int]:
        """Root-first stacks for flame.fold / flame.svg: the pod is the first frame under the root."""
        out: dict[tuple[str, ...], int] = {}
        for row in self.rows:
            frames = [str(f) for f in _seq(row.get("frames"))] or [str(row.get("func", ""))]
            key = (f"{row.get('namespace')}/{row.get('pod')}", *reversed(frames))
            out[key] = out.get(key, 0) + _count(row)
        return out

    def as_json(self) -> str:
        totals = [{"func": f, "count": n} for f, n in sorted(self.totals().items())]
        pods = [
            {"node": node, "pod": pod, "container": container, "func": func, "count": _count(row)}
            for (node, pod, container, func), row in sorted(self.per_pod().items())
        ]
        out = {"type": "aggregate", "action": self.action, "rows": self.rows, "pods": pods, "total": totals}
        return json.dumps(out)


def _as_buckets(row: Mapping[str, object]) -> dict[tuple[int, int], int]:
    got = row.get("buckets")
    return dict(got) if isinstance(got, dict) else {}


def _quantile(buckets: Mapping[tuple[int, int], int], q: float) -> str:
    """The upper bound of the bucket holding quantile q (a histogram knows no better)."""
    total = sum(buckets.values())
    if not total:
        return "-"
    seen = 0
    for (low, high), n in sorted(buckets.items()):
        seen += n
        if seen >= q * total:
            return f"<{high}us" if high else f">={low}us"
    return "-"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(printable(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
