"""Text tables and JSON for results; output goes to the stream it is given."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any, TextIO

from ctrace import elf, procfs
from ctrace.model import Binary, Probe, Process, Symbol, Target


def binary_dict(b: Binary) -> dict[str, Any]:
    return asdict(b)


def probe_dict(p: Probe) -> dict[str, Any]:
    first = p.commands[0]
    return {
        "symbol": p.symbol,
        "address": p.address,
        "attach": p.attach,
        "form": first.form,
        "argv": list(first.argv),
        "shell": first.shell,
        "alternatives": [{"form": c.form, "argv": list(c.argv), "shell": c.shell} for c in p.commands[1:]],
    }


def process_dict(p: Process) -> dict[str, Any]:
    return {
        "runtime": p.runtime,
        "pid": p.pid,
        "nspid": list(p.nspid),
        "comm": p.comm,
        "container": asdict(p.container) if p.container else None,
        "pod": asdict(p.pod) if p.pod else None,
    }


def target_dict(t: Target) -> dict[str, Any]:
    out = process_dict(t.process)
    out["init"] = t.process.init
    out["binary"] = binary_dict(t.binary)
    out["probes"] = [probe_dict(p) for p in t.probes]
    out["warnings"] = list(t.warnings)
    return out


def dump(obj: Any, out: TextIO) -> None:
    json.dump(obj, out, indent=2)
    out.write("\n")


def table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Left-aligned columns; the last column is not padded."""
    if not rows:
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]
        out.write("  ".join(cells).rstrip() + "\n")


def chain(nspid: Sequence[int]) -> str:
    return " -> ".join(str(n) for n in nspid)


def targets_text(targets: Sequence[Target], out: TextIO) -> None:
    for i, t in enumerate(targets):
        if i:
            out.write("\n")
        p, b = t.process, t.binary
        where = f"container {p.container.name}" if p.container else p.runtime
        out.write(f"{p.comm}  pid {p.pid}  ({where}; NSpid {chain(p.nspid)})\n")
        out.write(f"  binary   {b.path}\n  host     {b.host_path}\n")
        if b.merged_path:
            out.write(f"  merged   {b.merged_path}\n")
        stripped = "stripped" if b.stripped else "not stripped"
        out.write(f"  elf      {b.language}, {stripped}, build-id {b.build_id or '-'}\n")
        for w in t.warnings:
            out.write(f"  warning: {w}\n")
        for probe in t.probes:
            out.write(f"\n  # {probe.symbol}  ({probe.attach} 0x{probe.address:x})\n")
            for n, cmd in enumerate(probe.commands):
                label = "" if n == 0 else f"# or ({cmd.form}): "
                prefix = "  " if n == 0 else "  "
                out.write(f"{prefix}{label}{cmd.shell}\n")


def symbols_text(binary: Binary, info: elf.ElfInfo, symbols: Sequence[Symbol], out: TextIO) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in info.sources().items()) or "none"
    stripped = "stripped" if info.stripped else "not stripped"
    out.write(f"# {binary.path}: {info.language}, {stripped}, {len(symbols)} functions ({counts})\n")
    if not symbols:
        return
    # What table() prints, without its per-cell Python work (dockerd: ~440 ms to ~200 ms whole run):
    # addresses are always 16 digits, and the widest size is the largest one.
    size_w, source_w = len(str(max(map(_SIZE, symbols)))), max(len(s) for s in set(map(_SOURCE, symbols)))
    for start in range(0, len(symbols), _CHUNK):
        part = map(_ROW, symbols[start : start + _CHUNK])
        rows = [f"{a:016x}  {z:<{size_w}}  {s:<{source_w}}  {n}".rstrip() for n, a, z, s in part]
        out.write("\n".join(rows) + "\n")


def symbols_dict(binary: Binary, info: elf.ElfInfo, symbols: Sequence[Symbol]) -> dict[str, Any]:
    return {
        "binary": binary_dict(binary),
        "sources": info.sources(),
        "symbols": [{"name": s.name, "address": s.address, "size": s.size, "source": s.source} for s in symbols],
    }


def symbols_json(binary: Binary, info: elf.ElfInfo, symbols: Sequence[Symbol], out: TextIO) -> None:
    """``dump(symbols_dict(...))``, one symbol per line, written without building a dict per symbol.

    json's indent path is pure Python: 1.6 s for dockerd's 70k symbols. Here rows
    are f-strings, written a chunk at a time so one chunk's memory is reused for
    the next, and a chunk whose names are all plain printable ASCII (nearly all)
    skips the per-name JSON escaping: ~50 ms for dockerd (benchmarks/).
    """
    head = json.dumps({"binary": binary_dict(binary), "sources": info.sources()}, indent=2)[:-2]  # no "\n}"
    out.write(f'{head},\n  "symbols": [')
    for start in range(0, len(symbols), _CHUNK):
        out.write(("\n    " if start == 0 else ",\n    ") + ",\n    ".join(_rows(symbols[start : start + _CHUNK])))
    out.write("\n  ]\n}\n" if symbols else "]\n}\n")


_CHUNK = 4096
_NAME, _SIZE, _SOURCE, _ROW = itemgetter(0), itemgetter(2), itemgetter(3), itemgetter(0, 1, 2, 3)


def _rows(part: Sequence[Symbol]) -> list[str]:
    # Sources are ctrace's own identifiers ("symtab", "dynsym", ...): never escaped.
    text = " ".join(map(_NAME, part))
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return [f'{{"name": "{n}", "address": {a}, "size": {z}, "source": "{s}"}}' for n, a, z, s in map(_ROW, part)]
    quoted = encode_basestring_ascii
    return [f'{{"name": {quoted(n)}, "address": {a}, "size": {z}, "source": "{s}"}}' for n, a, z, s in map(_ROW, part)]


def ns_dict(pid: int, status: procfs.Status, namespaces: dict[str, int]) -> dict[str, Any]:
    return {
        "pid": pid,
        "nspid": list(status.nspid),
        "nstgid": list(status.nstgid),
        "nspgid": list(status.nspgid),
        "nssid": list(status.nssid),
        "namespaces": namespaces,
        "in_child_pid_namespace": len(status.nspid) > 1,
    }


def ns_text(d: dict[str, Any], out: TextIO) -> None:
    for key in ("pid", "nspid", "nstgid", "nspgid", "nssid"):
        value = d[key]
        out.write(f"{key:<10}{chain(value) if isinstance(value, list) else value}\n")
    out.write(f"{'child pid namespace':<10} {'yes' if d['in_child_pid_namespace'] else 'no'}\n")
    table([[name, str(ident)] for name, ident in d["namespaces"].items()], out)


def ps_text(procs: Sequence[Process], out: TextIO) -> None:
    rows = [["PID", "NSPID", "COMM", "CONTAINER", "EXE"]]
    for p in procs:
        container = p.container.name if p.container else "-"
        exe = p.exe + (" (deleted)" if p.deleted else "")
        rows.append([str(p.pid), chain(p.nspid), p.comm, container, exe])
    table(rows, out)
