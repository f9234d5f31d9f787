"""One run on one pod: a connection to its node's agent, read on a thread of its own.

Everything the agent says goes to the client's queue as (member, message) in the order it
came; the client's main thread alone prints. Pings and "stop" are written from the main
thread, under a lock (the reader never writes)."""

from __future__ import annotations

import socket
import threading

from ctrace.agent import protocol
from ctrace.agent.checks import ProtocolError
from ctrace.errors import CtraceError
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from collections.abc import Callable
    from queue import Queue
    from typing import Any

    from ctrace.fanout.members import Member

    Connect = Callable[[], tuple[str, Any]]  # the agent pod, a socket to it (or the port-forward's socket)


class Closed(Record):
    """The connection ended; ``reason`` is empty when it ended after "end"."""

    reason: str


class Failed(Record):
    """The agent could not be reached (no socket at all)."""

    reason: str


class Session:
    def __init__(self, member: Member, connect: Connect, run: protocol.Run, out: Queue[Any]) -> None:
        self.member, self.agent = member, f"the agent on {member.node}"
        self._connect, self._run, self._out = connect, run, out
        self._sock: Any = None
        self._lock = threading.Lock()
        self.ended = False  # "end" came, or the connection closed: nothing more will
        self.stopping = False
        self.thread = threading.Thread(target=self._main, name=f"ctrace {member.pod}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _main(self) -> None:
        try:
            name, sock = self._connect()
        except CtraceError as err:
            self._out.put((self, Failed(err.message)))
            return
        except OSError as err:
            self._out.put((self, Failed(f"cannot connect to {self.agent}: {err}")))
            return
        with self._lock:
            self._sock, self.agent = sock, f"agent pod {name}"
        self.send(self._run)
        self._out.put((self, Closed(self._read(sock))))

    def _read(self, sock: Any) -> str:
        """Lines until "end" or the connection closes; the reason when it closed early."""
        reader = sock.makefile("rb")
        heard = False
        try:
            for line in reader:
                try:
                    msg = protocol.decode_agent(line)
                except ProtocolError as err:
                    return f"the agent on {self.member.node} sent a line ctrace cannot read: {err.message}"
                heard = True
                self._out.put((self, msg))
                if isinstance(msg, (protocol.End, protocol.Error)):
                    return ""
        except OSError as err:
            return self._early(heard, f"broke ({err.strerror or err})")
        finally:
            reader.close()
            self.close()
        return self._early(heard, "closed before the run ended")

    def _early(self, heard: bool, what: str) -> str:
        if heard:
            return f"the connection to {self.agent} {what}"
        # The port-forward itself succeeds; nothing listening in the pod shows as a closed stream.
        where = f"127.0.0.1:{protocol.PORT}"
        why = "does it run the ctrace agent command of manifests/agent.yaml?"
        return f"{self.agent} did not answer on {where} ({why}): the connection {what}"

    def send(self, msg: protocol.Message) -> None:
        with self._lock:
            if self._sock is None:
                return
            try:
                self._sock.sendall(protocol.encode(msg))
            except OSError:
                pass  # the reader sees the connection end and says so

    def ping(self) -> None:
        self.send(protocol.Ping())

    def stop(self) -> None:
        if not self.stopping:
            self.stopping = True
            self.send(protocol.Stop())

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader's recv
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


def plain(record: Any) -> Any:
    """A protocol record as the JSON it came as (wire names, no unset optional fields)."""
    if isinstance(record, tuple) and hasattr(record, "_fields"):
        return {
            protocol.WIRE.get(k, k): plain(v)
            for k, v in zip(record._fields, record)
            if v is not None or k not in protocol.SKIPPED_WHEN_NONE
        }
    if isinstance(record, tuple):
        return [plain(v) for v in record]
    return record
