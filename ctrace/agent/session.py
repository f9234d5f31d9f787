"""One connection of ``ctrace agent``: hello, one run request, the trace as a child, its lines, the end.

The trace is ``ctrace target CONTAINER_ID --runtime R ... --run -o json`` (ctrace/_agent_child.py),
its argv built from validated fields only (protocol.py), never through a shell and
never with --unsafe, in a process group of its own: a crash or hang of the trace
never takes the agent down, and the group is what is stopped. Ending (PROTOCOL.md):
on "stop", on the connection closing, after SILENCE seconds without a line from the
client, at the deadline: SIGINT to the group (bpftrace prints its maps and detaches,
ctrace names what it saw), SIGKILL after STOP_GRACE to every process of the group
but ctrace itself, and to ctrace too if it has not ended AFTER_STOP later; a last
SIGKILL to the group when the loop ends, so nothing it started outlives the run.
"""

from __future__ import annotations

import collections
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from ctrace.agent import protocol as p
from ctrace.errors import CtraceError
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    import threading

    from ctrace.agent.placement import Placed

AFTER_STOP = 15.0  # ctrace's time to name the stacks once bpftrace is gone
AFTER_EXIT = 5.0  # how long the pipes may stay open once ctrace has ended
SEND_TIMEOUT = 10.0  # a client that reads nothing for this long is gone


class Config(Record):
    node: str
    allow_programs: bool
    bpftrace: str | None
    proc_root: str
    max_duration: float
    max_runs: int
    shutdown: threading.Event
    active: set[int]  # PIDs of running children: the server's orphan reaper leaves them to their session


_UPGRADE = "install the agent's version of ctrace, or roll out the agent of yours"


class Gone(Exception):
    """The client closed the connection, or cannot be written to."""


class Refused(CtraceError):
    """A request the agent does not run."""

    exit_code = 2


def serve(sock: socket.socket, config: Config) -> None:
    """One connection, start to close; never raises."""
    try:
        sock.settimeout(SEND_TIMEOUT)
        Session(sock, config).run()
    except (Gone, OSError):
        pass
    finally:
        sock.close()


class Session:
    def __init__(self, sock: socket.socket, config: Config) -> None:
        self.sock, self.config = sock, config
        self.buffer = b""
        self.client_open = True

    def send(self, msg: p.Message) -> None:
        if not self.client_open:
            return
        try:
            for line in p.encode_all(msg):
                self.sock.sendall(line)
        except OSError as err:
            self.client_open = False
            raise Gone from err

    def run(self) -> None:
        self.send(p.Hello(p.VERSION, self.config.node))
        try:
            request = self.request()
            argv = command(request, self.place(request), self.config)
        except CtraceError as err:
            self.send(p.Error(err.message, err.hint or None))
            return
        try:
            trace = Trace(self, argv, request)
        except OSError as err:
            self.send(p.Error(f"the agent cannot start the trace: {err.strerror or err}", None))
            return
        trace.run()

    def request(self) -> p.Request:
        line = self.read_line(p.SILENCE)
        if line is None:
            raise Gone
        try:
            msg = p.decode_client(line)
        except p.ProtocolError:
            theirs = p.peek_version(line)
            if theirs is not None and theirs != p.VERSION:
                raise Refused(p.version_mismatch(theirs, p.VERSION, self.config.node) or "", _UPGRADE) from None
            raise
        if not isinstance(msg, p.Run):
            raise Refused(f"expected a run request first, not {p.TYPE_OF[type(msg)]}")
        mismatch = p.version_mismatch(msg.version, p.VERSION, self.config.node)
        if mismatch is not None:
            raise Refused(mismatch, _UPGRADE)
        if len(self.config.active) >= self.config.max_runs:
            raise Refused(
                f"the agent on node {self.config.node} runs {len(self.config.active)} traces already, its limit",
                "try again when one has ended (the DaemonSet sets --max-runs)",
            )
        if msg.request.program is not None and not self.config.allow_programs:
            raise Refused(
                "this agent does not run programs of your own",
                "the DaemonSet enables them with CTRACE_AGENT_ALLOW_PROGRAMS=1 (manifests/agent.yaml)",
            )
        return msg.request

    def place(self, request: p.Request) -> Placed:
        """The request's pod on this node; a failure of the lookup itself is an error, not a dead thread."""
        try:
            return self._place(request)
        except CtraceError:
            raise
        except Exception as err:  # a bug in a lookup: one line to the client, the agent goes on
            sys.stderr.write(f"ctrace agent: internal error finding pod {request.namespace}/{request.pod}: {err!r}\n")
            raise Refused(f"internal error in the agent: {type(err).__name__}: {err}", "see the agent's log") from err

    def _place(self, request: p.Request) -> Placed:
        from ctrace.agent import placement
        from ctrace.resolvers.base import Context

        return placement.find(request, Context(proc_root=self.config.proc_root, self_pid=os.getpid()), self.config.node)

    def read_line(self, timeout: float) -> bytes | None:
        """The next line from the client, or None when it closed or said nothing for ``timeout``."""
        end = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0 or not self.receive(left):
                return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def receive(self, timeout: float) -> bool:
        """Read what the client sent; False when it has closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return True
        except OSError:
            data = b""
        finally:
            self.sock.settimeout(SEND_TIMEOUT)
        if not data:
            self.client_open = False
            return False
        self.buffer += data
        if len(self.buffer) > p.MAX_LINE and b"\n" not in self.buffer:
            raise p.ProtocolError(f"a line over the limit of {p.MAX_LINE} bytes (1 MiB)")
        return True


def command(req: p.Request, placed: Placed, config: Config) -> list[str]:
    """The child's argv: every user value a validated field, each one argument (``--flag=value``)."""
    argv = [sys.executable, "-m", "ctrace._agent_child", "target", *placed.argv]
    if req.program is not None:
        argv.append(f"--program={req.program}")
    else:
        argv += [f"--func={f}" for f in req.functions]
        argv += ["--action", req.action, "--probe", p.CTRACE_PROBE[req.probe]]
    if req.lib is not None:
        argv.append(f"--lib={req.lib}")
    duration = min(req.duration or config.max_duration, config.max_duration)
    argv += ["--all", "--run", "-o", "json", f"--duration={duration:g}", f"--proc-root={config.proc_root}"]
    if config.bpftrace:
        argv.append(f"--bpftrace={config.bpftrace}")
    return argv


class Trace:
    """The child process of one run, relayed until it has ended."""

    def __init__(self, session: Session, argv: list[str], req: p.Request) -> None:
        self.session, self.config = session, session.config
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0
        )
        self.config.active.add(self.proc.pid)
        shown = " ".join(argv[3:]) if req.program is None else " ".join(a for a in argv[3:] if a[:10] != "--program=")
        sys.stderr.write(f"ctrace agent: run {self.proc.pid}: pod {req.namespace}/{req.pod}: ctrace {shown}\n")
        limit = min(req.duration, self.config.max_duration) if req.duration is not None else None
        self.deadline = time.monotonic() + p.deadline(limit)
        self.last_heard = time.monotonic()
        self.stopping: float | None = None
        self.why: tuple[int, str] | None = None  # the end the agent decided, when it did
        self.tracers_killed = False
        self.deadline_passed = False
        self.exited = 0.0  # when ctrace ended
        self.out = b""
        self.err: collections.deque[str] = collections.deque(maxlen=40)
        self.child_end: p.End | None = None
        self.started = False

    def run(self) -> None:
        try:
            self.relay()
        finally:
            self.kill(signal.SIGKILL)
            self.proc.wait()
            self.config.active.discard(self.proc.pid)
        self.finish()

    def relay(self) -> None:
        sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        sel.register(self.proc.stdout, selectors.EVENT_READ, self.child_out)
        sel.register(self.proc.stderr, selectors.EVENT_READ, self.child_err)
        if self.session.client_open:
            sel.register(self.session.sock, selectors.EVENT_READ, None)
        streams = 2
        while streams:
            for key, _ in sel.select(0.2):
                if key.data is None:
                    if not self.client_said():
                        sel.unregister(self.session.sock)
                    continue
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    streams -= 1
                else:
                    key.data(data)
            if not self.tick():
                break  # ctrace ended long ago and something of it still holds its pipes: killed below
        sel.close()

    def client_said(self) -> bool:
        """Read the client's lines; False once it has closed (the run is stopped then)."""
        try:
            if not self.session.receive(0):
                self.stop(p.STOPPED, "the client closed the connection")
                return False
            while b"\n" in self.session.buffer:
                line, self.session.buffer = self.session.buffer.split(b"\n", 1)
                self.last_heard = time.monotonic()
                msg = p.decode_client(line)
                if isinstance(msg, p.Stop):
                    self.stop(p.STOPPED, "stopped by the client")
                elif isinstance(msg, p.Run):
                    raise p.ProtocolError("one run per connection: a second run request")
        except p.ProtocolError as err:
            self.stop(p.STOPPED, f"the client sent what is not the protocol: {err.message}")
            self.send(p.Error(err.message, err.hint))
        return True

    def tick(self) -> bool:
        """The ending rules, checked between reads; False when the relay should give up."""
        now = time.monotonic()
        if self.proc.poll() is not None:
            self.exited = self.exited or now
            if now - self.exited > AFTER_EXIT:
                return False
        if self.stopping is None:
            self.check(now)
        elif not self.tracers_killed and now - self.stopping > p.STOP_GRACE:
            self.tracers_killed = True
            for pid in group(self.proc.pid, self.config.proc_root):
                if pid != self.proc.pid:
                    _signal(pid, signal.SIGKILL)
        elif now - self.stopping > p.STOP_GRACE + AFTER_STOP:
            self.kill(signal.SIGKILL)
        return True

    def check(self, now: float) -> None:
        """Stop the run when PROTOCOL.md says it ends."""
        if now - self.last_heard > p.SILENCE and self.session.client_open:
            self.stop(p.STOPPED, f"no line from the client for {p.SILENCE:g} s")
        elif now > self.deadline:
            self.deadline_passed = True
            self.stop(p.OK, "the agent's deadline passed")
        elif self.config.shutdown.is_set():
            self.stop(p.STOPPED, "the agent is shutting down")
        elif self.proc.poll() is not None:
            self.kill(signal.SIGKILL)  # ctrace is gone: whatever it started must not outlive it

    def stop(self, code: int, reason: str) -> None:
        if self.stopping is None:
            self.stopping, self.why = time.monotonic(), (code, reason)
            self.kill(signal.SIGINT)

    def kill(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group is empty

    def send(self, msg: p.Message) -> None:
        try:
            self.session.send(msg)
        except Gone:
            self.stop(p.STOPPED, "the client cannot be written to")

    def child_out(self, data: bytes) -> None:
        self.out += data
        while b"\n" in self.out:
            line, self.out = self.out.split(b"\n", 1)
            self.relay_line(line)
        if len(self.out) > p.MAX_LINE:
            self.out = b""
            self.stop(p.GONE, "the trace wrote a line over the limit")

    def relay_line(self, line: bytes) -> None:
        try:
            msg = p.decode_agent(line)
        except p.ProtocolError as err:
            sys.stderr.write(f"ctrace agent: dropped a line of the trace: {err.message}\n")
            return
        if isinstance(msg, p.End):
            self.child_end = msg
        elif isinstance(msg, (p.Started, p.Event, p.Aggregate)):
            self.started = self.started or isinstance(msg, p.Started)
            self.send(p.labelled(msg, self.config.node or None))

    def child_err(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        sys.stderr.write(text)  # the agent's log (kubectl logs)
        self.err.extend(line for line in text.splitlines() if line.strip())

    def finish(self) -> None:
        error = _error(list(self.err))
        code = self.proc.returncode
        if self.why is not None and not self.deadline_passed:
            end = p.End(*self.why)
        elif self.child_end is not None:
            end = self.child_end if self.why is None else self.child_end._replace(reason=self.why[1])
        elif error is not None:
            end = p.End(code if 0 < code < 256 else 1, error.message)
        else:
            end = p.End(1, f"the trace ended without a word (status {code})")
        if error is not None and (not self.started or end.code not in (p.OK, p.STOPPED)):
            self.send(error)
        self.send(end)
        sys.stderr.write(f"ctrace agent: run {self.proc.pid}: end {end.code}: {end.reason}\n")


def _error(lines: list[str]) -> p.Error | None:
    """The child's ``ctrace: error: ...`` and ``hint: ...`` lines (cli._report), as an error."""
    for i, line in enumerate(lines):
        if line.startswith("ctrace: error: "):
            hint = (
                lines[i + 1].removeprefix("hint: ")
                if i + 1 < len(lines) and lines[i + 1].startswith("hint: ")
                else None
            )
            return p.Error(line.removeprefix("ctrace: error: ")[:4096], hint[:4096] if hint else None)
    return None


def group(pgid: int, proc_root: str) -> list[int]:
    """The processes of a process group, from /proc (field 5 of stat)."""
    found = []
    for name in os.listdir(proc_root):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc_root}/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if len(fields) > 3 and int(fields[2]) == pgid:
            found.append(int(name))
    return found


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
