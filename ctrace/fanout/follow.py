"""Following a workload while the run lasts: which pods to attach and detach, from the
list at the start and the watch's events after it (pure; the client acts on the changes)."""

from __future__ import annotations

from ctrace.errors import CtraceError
from ctrace.fanout import members
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ctrace.fanout.members import Member
    from ctrace.resolvers.pods import PodJSON


class Change(Record):
    """``+``: attach ``member``; ``-``: it went (``reason``); ``!``: it cannot be traced."""

    sign: str
    pod: str  # namespace/name
    member: Member | None
    reason: str = ""

    def line(self) -> str:
        name = self.pod.rpartition("/")[2]
        if self.sign == "+" and self.member is not None:
            again = f" ({self.reason})" if self.reason else ""
            return f"+ pod/{name} on {self.member.node}{again}"
        return f"{self.sign} pod/{name}: {self.reason}"


class Tracker:
    """The pods being traced, by UID, and the container each run is attached to."""

    def __init__(self, container: str | None) -> None:
        self.container = container
        self.live: dict[str, Member] = {}
        self.waiting: set[str] = set()  # listed but not ready yet: attached when they are
        self.gone: set[str] = set()

    def start(self, listed: Iterable[PodJSON]) -> list[Change]:
        """The pods matching at the start: the ready ones attached, the others said."""
        out: list[Change] = []
        for pod in listed:
            if members.ready(pod):
                out.extend(self.update("ADDED", pod))
                continue
            uid = pod.get("metadata", {}).get("uid", "")
            reason = members.why_not(pod, self.container) or "it is not ready"
            if members.gone(pod):  # leaving as the run starts: not one of the pods to trace
                self.gone.add(uid)
                out.append(Change("-", members.label(pod), None, f"{reason} (not traced)"))
            else:
                self.waiting.add(uid)
                out.append(Change("!", members.label(pod), None, f"{reason}; not traced (yet)"))
        return out

    def update(self, kind: str, pod: PodJSON) -> list[Change]:
        """One watch event (ADDED, MODIFIED, DELETED) -> what to do."""
        uid = pod.get("metadata", {}).get("uid", "")
        name = members.label(pod)
        reason = "deleted" if kind == "DELETED" else members.gone(pod)
        if reason:
            self.waiting.discard(uid)
            if uid in self.gone:
                return []
            self.gone.add(uid)
            return [Change("-", name, self.live.pop(uid, None), reason)]
        if uid in self.gone or not members.ready(pod):
            return []  # a readiness blip does not end a run: the agent says when the process goes
        try:
            found = members.member(pod, self.container)
        except CtraceError as err:
            self.waiting.discard(uid)
            return [Change("!", name, None, err.message)]
        before = self.live.get(uid)
        if before is not None and before.container_id == found.container_id:
            return []
        self.live[uid] = found
        self.waiting.discard(uid)
        return [Change("+", name, found, "restarted" if before is not None else "")]
