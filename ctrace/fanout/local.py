"""A pod on this very node (by identity: NODE_NAME or machine-id) runs here, not through an agent.

It is ctrace's own local run, `ctrace target pod/NAME -n NS -c C --func ... --run -o json`,
as a child that dies with the client (PR_SET_PDEATHSIG): that child sees only local pods, so
it takes the local path, and prints the same event and aggregate lines an agent sends."""

from __future__ import annotations

import signal
import subprocess
import sys

from ctrace.agent import protocol
from ctrace.agent.checks import ProtocolError
from ctrace.fanout.session import Closed, Failed, Session
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from queue import Queue
    from typing import Any

    from ctrace.fanout.members import Member


def argv(run: protocol.Run, m: Member, k8s_flags: list[str]) -> list[str]:
    req = run.request
    out = [sys.executable, "-m", "ctrace", "target", f"pod/{m.name}", "-n", m.namespace, "-c", m.container]
    if req.program is not None:
        out.append(f"--program={req.program}")
    else:
        out += [f"--func={f}" for f in req.functions]
        out += ["--action", req.action, "--probe", protocol.CTRACE_PROBE[req.probe]]
    out += ["--run", "-o", "json", *k8s_flags]
    if req.lib:
        out.append(f"--lib={req.lib}")
    if req.duration:
        out += ["--duration", f"{req.duration:g}"]
    return out


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphan after kill -9


class Local(Session):
    """The same messages a remote session gives, from a local ctrace child."""

    def __init__(self, member: Member, run: protocol.Run, cmd: list[str], out: Queue[Any]) -> None:
        super().__init__(member, lambda: ("this node", None), run, out)
        self.cmd = cmd
        self.proc: subprocess.Popen[bytes] | None = None

    def _main(self) -> None:
        import tempfile

        with tempfile.TemporaryFile() as errors:
            try:
                self.proc = proc = subprocess.Popen(
                    self.cmd, stdout=subprocess.PIPE, stderr=errors, preexec_fn=_die_with_parent
                )
            except OSError as err:
                self._out.put((self, Failed(f"cannot start ctrace here: {err}")))
                return
            ended = False
            assert proc.stdout is not None
            for line in proc.stdout:  # started, event, aggregate, end: as an agent sends them
                try:
                    msg = protocol.decode_agent(line)
                except ProtocolError:
                    continue  # not one of the run's objects
                ended = ended or isinstance(msg, protocol.End)
                self._out.put((self, msg))
            code = proc.wait()
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines()
        last = said[-1].removeprefix("ctrace: error: ") if said else f"ctrace exited with {code}"
        self._out.put((self, Closed("") if ended else Failed(last)))

    def ping(self) -> None:
        pass  # the child is ours: it needs no sign of life

    def stop(self) -> None:
        if not self.stopping and self.proc is not None and self.proc.poll() is None:
            self.stopping = True
            self.proc.send_signal(signal.SIGINT)  # as Ctrl-C: it prints its aggregate and ends

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
