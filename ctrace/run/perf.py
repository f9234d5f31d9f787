"""``--tool perf --run``: the DWARF stack of the tracing-basics post's section 4.1.2, run and named.

bpftrace's ustack follows frame pointers, which most distribution builds omit
(ctrace/plan/framepointers.py says so before the run). ``perf record --call-graph
dwarf`` copies 8 KiB of the user stack with each sample and unwinds it from
.eh_frame afterwards, so it walks through such code. ctrace adds the uprobe
event (``perf probe -x FILE --add EVENT=OFFSET``), records the PID, reads
``perf script``, names what perf could not (a stripped Go binary's frames, from
ctrace's own tables), prints the top stacks with their counts, and always
removes the event again.

Which unwinder gave a frame is printed beside it: ``probe`` for frame 0 (the
registers at the uprobe), ``dwarf`` for frames perf unwound from .eh_frame,
``inlined`` for frames perf added from .debug_info's inline records (no
unwinder: they share their caller's real frame).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence

from ctrace.errors import EnvironmentProblem, UsageError
from ctrace.model import Command
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import TextIO

    from ctrace.plan.request import Plan

FIELDS = "comm,pid,tid,ip,sym,symoff,dso"
GRACE = 30.0  # seconds perf record gets to write its file after SIGINT
TOP = 10  # stacks printed


class Frame(Record):
    address: int  # as perf prints it: the file offset of the instruction (map-relative ip)
    symbol: str  # "" when unknown
    offset: int
    dso: str  # the file, or "" when perf did not know it
    unwinder: str  # "probe", "dwarf" or "inlined"
    named_by: str = "perf"  # "perf", "ctrace", or "" (no one)

    def label(self) -> str:
        """``sym+0xOFF``, or ``[file+0xADDR]`` as perf writes a frame it cannot name."""
        if self.symbol:
            return f"{self.symbol}+0x{self.offset:x}"
        from ctrace.run.symbolize import in_file

        return in_file(self.dso or "unknown", self.address)

    def folded(self) -> str:
        return self.symbol or self.label()


class Sample(Record):
    comm: str
    pid: int
    tid: int
    frames: tuple[Frame, ...]  # leaf first, as perf prints them


def parse(text: str) -> list[Sample]:
    """``perf script -F comm,pid,tid,ip,sym,symoff,dso`` of a --call-graph record."""
    out: list[Sample] = []
    head: tuple[str, int, int] | None = None
    frames: list[Frame] = []
    for line in text.splitlines():
        if not line.strip():
            if head is not None:
                out.append(Sample(*head, tuple(frames)))
            head, frames = None, []
        elif line[0] in " \t":
            frame = _frame(line.strip(), first=not frames)
            if frame is not None:
                frames.append(frame)
        else:
            head = _head(line)
    if head is not None:
        out.append(Sample(*head, tuple(frames)))
    return out


def _head(line: str) -> tuple[str, int, int] | None:
    """``COMM PID/TID`` (a comm may hold spaces, so read from the right)."""
    comm, _, ids = line.rstrip().rpartition(" ")
    pid, _, tid = ids.partition("/")
    if not (pid.isdigit() and tid.isdigit()):
        return None
    try:
        return comm.strip(), int(pid), int(tid)
    except ValueError:  # '\u00b2'.isdigit(), or more digits than int() reads (4300 since Python 3.11)
        return None


def _frame(text: str, first: bool) -> Frame | None:
    """``ADDR SYM+0xOFF (DSO)``; SYM is ``[unknown]`` when perf could not name it."""
    addr, _, rest = text.partition(" ")
    try:
        address = int(addr, 16)
    except ValueError:
        return None
    where, _, dso = rest.rpartition(" (")
    dso = dso.removesuffix(")")
    symbol, offset = _symbol(where.strip())
    unwinder = "inlined" if dso == "inlined" else "probe" if first else "dwarf"
    if dso in ("inlined", "[unknown]"):
        dso = ""
    return Frame(address, symbol, offset, dso, unwinder, "perf" if symbol else "")


def _symbol(text: str) -> tuple[str, int]:
    if text == "[unknown]" or not text:
        return "", 0
    name, plus, off = text.rpartition("+0x")
    if plus:
        try:
            return name, int(off, 16)
        except ValueError:
            pass
    return text, 0


def name(samples: Sequence[Sample], pid: int, proc_root: str = "/proc") -> list[Sample]:
    """Frames perf left unnamed, named as bpftrace's stacks are (symbolize.Table: Go's function
    table of a stripped binary, debug files); the file is read in the process's root. Only the
    names found are demangled: a cold demangle of every name of a big C++ library (libLLVM: 30k)
    is not paid to name a few frames."""
    from ctrace.run import symbolize

    tables: dict[str, symbolize.Table | None] = {}
    named = []
    for s in samples:
        frames = []
        for f in s.frames:
            if not f.symbol and f.dso:
                if f.dso not in tables:
                    tables[f.dso] = symbolize.file_table(f.dso, f"{proc_root}/{pid}/root")
                table = tables[f.dso]
                found = table.at_offset(f.address) if table is not None else None
                if found is not None:
                    f = f._replace(symbol=found[0], offset=found[1], named_by="ctrace")
            frames.append(f)
        named.append(s._replace(frames=tuple(frames)))
    readable = symbolize.demangled({f.symbol for s in named for f in s.frames if f.named_by == "ctrace"})
    if not readable:
        return named
    return [s._replace(frames=tuple(_readable(f, readable) for f in s.frames)) for s in named]


def _readable(f: Frame, readable: dict[str, str]) -> Frame:
    return f._replace(symbol=readable.get(f.symbol, f.symbol))


def counts(samples: Iterable[Sample]) -> Counter[tuple[str, ...]]:
    """Root-first stacks of function names and how often each was seen (for flame.fold/svg)."""
    return Counter(tuple(f.folded() for f in reversed(s.frames)) for s in samples)


def render(samples: Sequence[Sample], what: str, out: TextIO, top: int = TOP) -> None:
    """The top stacks, each with its count, PID and every frame's unwinder and namer."""
    if not samples:
        out.write(f"perf recorded no calls of {what}\n")
        return
    by_stack = Counter((s.pid, s.comm, s.frames) for s in samples)
    out.write(
        f"perf --call-graph dwarf: {len(samples)} calls of {what}, {len(by_stack)} distinct stacks\n"
        "unwinder: probe = the registers where the uprobe fired; dwarf = perf unwound it from .eh_frame; "
        "inlined = perf's .debug_info inline record (no frame of its own); "
        "a name marked * was found by ctrace, not perf\n"
    )
    for (pid, comm, frames), n in by_stack.most_common(top):
        out.write(f"\n{n} x  pid {pid}  {comm}\n")
        for f in frames:
            mark = "*" if f.named_by == "ctrace" else " "
            where = os.path.basename(f.dso) or f"({f.unwinder})"
            out.write(f"  {f.unwinder:<8}{mark}{f.label():<48} {where}\n")
    if len(by_stack) > top:
        out.write(f"\n({len(by_stack) - top} rarer stacks not shown)\n")
    if all(len(s.frames) <= 1 for s in samples):
        out.write(
            "\nperf unwound nothing past the probed frame: it found no unwind table for the code (Go writes "
            "no .eh_frame and stripping removes .debug_frame; a static C link has no .eh_frame_hdr unless "
            "linked with -Wl,--eh-frame-hdr); code that keeps frame pointers (Go does) gives its whole "
            "stack to bpftrace: drop --tool perf\n"
        )


def run(
    result: Plan,
    duration: float | None,
    out: TextIO,
    proc_root: str = "/proc",
    folded: str | None = None,
    flamegraph: str | None = None,
) -> int:
    """Add the event, record until Ctrl-C or ``duration``, show the named stacks, remove the event;
    ``folded`` and ``flamegraph`` are files for the same stacks as ctrace/run/flame.py writes them."""
    pid, symbol, steps = _chosen(result)
    if shutil.which("perf") is None:
        raise EnvironmentProblem("perf is not installed", "install it (Debian: apt-get install linux-perf)")
    add, record, _, delete = (list(c.argv) for c in steps)
    if _perf(add, "", check=False) is None:  # an event left by a killed run: replace it
        subprocess.run(delete, capture_output=True)
        _perf(add, "perf probe could not add the uprobe event")
    interrupted = False
    try:
        with tempfile.TemporaryDirectory(prefix="ctrace-perf-") as tmp:
            data = os.path.join(tmp, "perf.data")
            interrupted = _record([*record[: record.index("--")], "-o", data], duration)
            text = _perf(["perf", "script", "-i", data, "-F", FIELDS], "perf script could not read the record") or ""
    finally:
        subprocess.run(delete, capture_output=True)
    samples = [s for s in name(parse(text), pid, proc_root) if s.pid == pid]
    render(samples, f"{symbol} in pid {pid}", out)
    write_flames(samples, f"{symbol} in pid {pid} (perf, DWARF unwinding)", folded, flamegraph)
    return 130 if interrupted else 0


def write_flames(samples: Sequence[Sample], title: str, folded: str | None, flamegraph: str | None) -> None:
    if not (folded or flamegraph):
        return
    from ctrace.run import flame

    stacks = counts(samples)
    try:
        if folded:
            with open(folded, "w", encoding="utf-8") as f:
                f.write(flame.fold(stacks))
        if flamegraph:
            with open(flamegraph, "w", encoding="utf-8") as f:
                f.write(flame.svg(stacks, title))
    except OSError as err:
        raise EnvironmentProblem(f"cannot write {err.filename}: {err.strerror}", "give a writable path") from err


def _chosen(result: Plan) -> tuple[int, str, tuple[Command, ...]]:
    found = [(t.process.pid, p.demangled or p.symbol, p.perf) for t in result.targets for p in t.probes]
    usable = [f for f in found if f[2]]
    if not usable:
        why = "; ".join(w for t in result.targets for w in t.warnings if "perf" in w) or "no perf path was found"
        raise UsageError(f"--tool perf --run: {why}", "run the bpftrace command instead (drop --tool perf)")
    if len(usable) > 1:
        raise UsageError(
            f"--tool perf --run records one function in one process; this matched {len(usable)}",
            "narrow --func or the target (pid:N)",
        )
    return usable[0]


def _perf(argv: list[str], what: str, check: bool = True) -> str | None:
    done = subprocess.run(argv, capture_output=True, text=True, errors="surrogateescape")
    if done.returncode != 0 and not check:
        return None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise EnvironmentProblem(f"{what}: {last}", "perf needs root and a kernel with uprobes (CONFIG_UPROBE_EVENTS)")
    return done.stdout


def _record(argv: list[str], duration: float | None) -> bool:
    """Run perf record until ``duration`` or Ctrl-C (True); it writes its file on SIGINT either way."""
    from ctrace.run import runner

    with tempfile.TemporaryFile() as err:
        code = runner.wait(runner.start(argv, stdout=subprocess.DEVNULL, stderr=err), duration, grace=GRACE)
        if code not in (0, -signal.SIGINT, 130):
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines() or ["(no message)"]
            raise EnvironmentProblem(f"perf record failed: {lines[-1]}", "perf needs root")
    return code == 130
