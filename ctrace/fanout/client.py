"""``--run`` on every pod of a target at once, each through its node's agent (issue 21).

The main thread owns the output: sessions (one thread and one connection per pod) and the
pod watch put what they get on one queue, and the loop below prints it, pings the agents,
attaches new pods and detaches gone ones, and on Ctrl-C or at the end of --duration sends
"stop" to every agent and prints the merged aggregates."""

from __future__ import annotations

import queue
import re
import sys
import threading
import time

from ctrace.agent import protocol
from ctrace.errors import CtraceError, NotFound, UsageError
from ctrace.fanout import follow, local, merge
from ctrace.fanout.local import Local
from ctrace.fanout.members import Member
from ctrace.fanout.session import Closed, Failed, Session, plain
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import Any, TextIO

    from ctrace.fanout.agents import Directory
    from ctrace.resolvers.kubernetes import Api

WATCH_SECONDS = 120  # the server ends a watch after this; it is started again from where it was
STOP_WAIT = protocol.STOP_GRACE + 3.0  # after "stop": bpftrace's SIGINT, SIGKILL, and the aggregate's way back


class Options(Record):
    target: str
    functions: tuple[str, ...]
    action: str
    probe: str = "entry"
    lib: str | None = None
    container: str | None = None
    duration: float | None = None
    program: str | None = None
    folded: str | None = None
    flamegraph: str | None = None
    json: bool = False
    agent_namespace: str = "ctrace-system"
    k8s_flags: tuple[str, ...] = ()  # --kubeconfig, --context: for a local run's own ctrace


def request_for(opts: Options, m: Member) -> protocol.Run:
    """The run request for one pod, checked as the agent will check it (a bad pattern is a
    usage error here, not a refusal from every node)."""
    req = protocol.Request(
        m.namespace, m.name, m.uid, opts.functions, opts.action, m.container, opts.lib, opts.probe, opts.duration,
        opts.program,
    )  # fmt: skip
    run = protocol.Run(protocol.VERSION, req)
    try:
        protocol.decode_client(protocol.encode(run))
    except CtraceError as err:
        said = re.sub(r"^run\.request\.(\w+)(\[\d+\])?", lambda m: FLAGS.get(m[1], m[1]), err.message)
        raise UsageError(said, "see 'ctrace target --help'") from err
    return run


FLAGS = {"functions": "--func", "lib": "--lib", "program": "-e", "duration": "--duration", "container": "-c"}
PLACEHOLDER = Member("default", "x", "00000000-0000-0000-0000-000000000000", "", "x", "")  # checks the flags alone


def run(opts: Options, api: Api, directory: Directory, out: TextIO, err: TextIO | None = None) -> int | None:
    """The fan-out's exit code; None when every pod is on this very node (the local path runs them)."""
    request_for(opts, PLACEHOLDER)  # a bad pattern is one line before any pod is listed
    labels, fields = api.pod_query(opts.target)
    listed, version = api.list_pods(labels, fields)
    if not listed:
        raise NotFound(f"no pods match {opts.target or labels!r} in namespace {api.namespace}", api.get_hint())
    nodes = {p.get("spec", {}).get("nodeName", "") for p in listed}
    if all(node and directory.is_local(node) for node in nodes):
        return None
    fan = Fanout(opts, directory, out, err or sys.stderr)
    fan.changes(fan.tracker.start(listed))
    watcher = threading.Thread(target=_watch, args=(api, labels, fields, version, fan.queue), daemon=True)
    watcher.start()
    return fan.loop()


def _watch(api: Api, labels: str, fields: str, version: str, out: queue.Queue[Any]) -> None:
    """Watch events onto the queue for as long as the process lives (a daemon thread)."""
    while True:
        try:
            for kind, pod in api.watch_pods(labels, fields, version, WATCH_SECONDS):
                version = pod.get("metadata", {}).get("resourceVersion", version)
                out.put(("watch", kind, pod))
        except CtraceError as failed:
            out.put(("watch-failed", failed.message, None))
            time.sleep(2.0)
            try:  # a resourceVersion too old (410) or a broken stream: list again, from now
                listed, version = api.list_pods(labels, fields)
            except CtraceError:
                continue
            for pod in listed:
                out.put(("watch", "MODIFIED", pod))


class Fanout:
    def __init__(self, opts: Options, directory: Directory, out: TextIO, err: TextIO) -> None:
        self.opts, self.directory, self.out, self.err = opts, directory, out, err
        self.queue: queue.Queue[Any] = queue.Queue()
        self.tracker = follow.Tracker(opts.container)
        self.merged = merge.Merged()
        self.sessions: dict[str, Session] = {}  # by pod UID: the newest run of each pod
        self.traced: set[str] = set()  # pod names with a started run
        self.failed: dict[str, str] = {}  # pod name -> why it was not traced
        self.stopping = False
        self.interrupted = False

    def say(self, line: str) -> None:
        self.err.write(line + "\n")
        self.err.flush()

    def changes(self, changes: list[follow.Change]) -> None:
        for change in changes:
            self.say(change.line())
            if change.sign == "+" and change.member is not None and not self.stopping:
                self.attach(change.member)
            elif change.sign == "!":
                self.failed[change.pod] = change.reason

    def attach(self, m: Member) -> None:
        old = self.sessions.get(m.uid)
        if old is not None:
            old.stop()
        self.failed.pop(m.pod, None)
        request = request_for(self.opts, m)
        if self.directory.is_local(m.node):
            s: Session = Local(m, request, local.argv(request, m, list(self.opts.k8s_flags)), self.queue)
        else:
            s = Session(m, lambda: self.directory.connect(m), request, self.queue)
        self.sessions[m.uid] = s
        s.start()

    def fail(self, s: Session, reason: str) -> None:
        s.ended = True
        if s.member.pod not in self.traced:
            self.failed[s.member.pod] = reason
        self.say(f"! pod/{s.member.name} on {s.member.node}: {reason}")

    def loop(self) -> int:
        """Until Ctrl-C, the end of --duration, or nothing left to trace; then the merged aggregates."""
        start = time.monotonic()
        deadline = start + self.opts.duration if self.opts.duration else None
        pinged = start
        try:
            while not self._done(deadline):
                self._drain(0.25)
                if time.monotonic() - pinged >= protocol.PING_EVERY:
                    pinged = time.monotonic()
                    for s in self.sessions.values():
                        if not s.ended:
                            s.ping()
        except KeyboardInterrupt:
            self.interrupted = True
        self._stop_all()
        return self._finish()

    def _done(self, deadline: float | None) -> bool:
        if deadline is not None:
            return time.monotonic() >= deadline
        live = any(not s.ended for s in self.sessions.values())
        return not live and not self.traced and not self.tracker.waiting and bool(self.sessions or self.failed)

    def _stop_all(self) -> None:
        self.stopping = True
        for s in self.sessions.values():
            if not s.ended:
                s.stop()
        until = time.monotonic() + STOP_WAIT
        while any(not s.ended for s in self.sessions.values()) and time.monotonic() < until:
            try:
                self._drain(0.1)
            except KeyboardInterrupt:
                break  # a second Ctrl-C: no more waiting
        for s in self.sessions.values():
            if not s.ended:
                self.fail(s, f"the agent did not end the run within {STOP_WAIT:g}s of 'stop'")
            s.close()

    def _drain(self, wait: float) -> None:
        try:
            item = self.queue.get(timeout=wait)
        except queue.Empty:
            return
        until = time.monotonic() + wait
        while True:
            self._handle(item)
            if time.monotonic() > until:
                return  # back to the loop: pings go out however fast events come
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return

    def _handle(self, item: Any) -> None:
        who, what = item[0], item[1]
        if who == "watch":
            if not self.stopping:
                self.changes(self.tracker.update(what, item[2]))
        elif who == "watch-failed":
            self.say(f"ctrace: warning: the watch of the pods ended ({what}); listing them again")
        else:
            self._message(who, what)

    def _message(self, s: Session, msg: Any) -> None:
        if isinstance(msg, protocol.Hello):
            mismatch = protocol.version_mismatch(protocol.VERSION, msg.version, msg.node or s.member.node)
            if mismatch:
                self.fail(s, mismatch)
                s.close()
        elif isinstance(msg, protocol.Error):
            self.fail(s, msg.message + (f" (hint: {msg.hint})" if msg.hint else ""))
        elif isinstance(msg, protocol.Started):
            self.traced.add(s.member.pod)
            self.failed.pop(s.member.pod, None)
        elif isinstance(msg, protocol.Event):
            self._event(s, plain(msg))
        elif isinstance(msg, protocol.Aggregate):
            self.merged.add(msg.action, [merge.labelled(plain(r), s.member) for r in msg.rows])
        elif isinstance(msg, protocol.End):
            self._end(s, msg)
        elif isinstance(msg, Failed):
            self.fail(s, msg.reason)
        elif isinstance(msg, Closed) and msg.reason and not s.ended:
            self.fail(s, msg.reason)

    def _end(self, s: Session, msg: protocol.End) -> None:
        if s.member.pod not in self.traced and msg.code not in (protocol.OK, protocol.STOPPED):
            self.fail(s, msg.reason or f"the run ended with code {msg.code} before it started")
            return
        s.ended = True
        if msg.code == protocol.GONE and not s.stopping and s.member.uid not in self.tracker.gone:
            self.say(f"- pod/{s.member.name}: {msg.reason or 'its process exited'}")

    def _event(self, s: Session, event: dict[str, Any]) -> None:
        event = merge.labelled(event, s.member)
        self.merged.event(event)
        if self.opts.json:
            self.out.write(merge.event_json({"type": "event", **event}) + "\n")
        else:
            self.out.write("".join(line + "\n" for line in merge.event_text(event)))
        self.out.flush()

    def _finish(self) -> int:
        if self.merged.per_pod() or self.opts.action in ("count", "latency", "stacks"):
            if self.opts.json:
                self.out.write(self.merged.as_json() + "\n")
            else:
                self.out.write("".join(line + "\n" for line in self.merged.table()))
            self.out.flush()
        self._write_files()
        if self.interrupted:
            return 130
        if self.failed:
            names = ", ".join(f"pod/{p.rpartition('/')[2]} ({why})" for p, why in sorted(self.failed.items()))
            self.say(f"ctrace: not traced: {names}")
            return 1
        return 0

    def _write_files(self) -> None:
        from ctrace.run import flame

        counts = self.merged.folded()
        if self.opts.folded:
            _write(self.opts.folded, flame.fold(counts))
            self.say(f"ctrace: folded stacks of every pod written to {self.opts.folded}")
        if self.opts.flamegraph:
            _write(self.opts.flamegraph, flame.svg(counts, f"ctrace {self.opts.target}"))
            self.say(f"ctrace: flame graph of every pod written to {self.opts.flamegraph}")


def _write(path: str, text: str) -> None:
    from ctrace.errors import EnvironmentProblem

    try:
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(text)
    except OSError as err:
        raise EnvironmentProblem(f"cannot write {path}: {err.strerror}", "give a writable path") from err
