"""Text tables and JSON for results; output goes to the stream it is given."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any, TextIO

from ctrace import elf, procfs
from ctrace.model import Binary, Probe, Process, Remote, Symbol, Target
from ctrace.plan import Plan
from ctrace.text import chain


def binary_dict(b: Binary) -> dict[str, Any]:
    return b._asdict()


def probe_dict(p: Probe) -> dict[str, Any]:
    first = p.commands[0]
    return {
        "symbol": p.symbol,
        "address": p.address,
        "attach": p.attach,
        "demangled": p.demangled,
        "probe": p.probe,
        "form": first.form,
        "argv": list(first.argv),
        "shell": first.shell,
        "alternatives": [{"form": c.form, "argv": list(c.argv), "shell": c.shell} for c in p.commands[1:]],
        "perf": [{"step": c.form, "argv": list(c.argv), "shell": c.shell} for c in p.perf],
    }


def process_dict(p: Process) -> dict[str, Any]:
    return {
        "runtime": p.runtime,
        "pid": p.pid,
        "nspid": list(p.nspid),
        "comm": p.comm,
        "container": p.container._asdict() if p.container else None,
        "pod": p.pod._asdict() if p.pod else None,
    }


def target_dict(t: Target) -> dict[str, Any]:
    out = process_dict(t.process)
    out["init"] = t.process.init
    out["binary"] = binary_dict(t.binary)
    out["probes"] = [probe_dict(p) for p in t.probes]
    out["warnings"] = list(t.warnings)
    return out


def remote_dict(r: Remote) -> dict[str, Any]:
    cmd = r.command
    return {
        "pod": r.pod._asdict(),
        "note": r.note,
        "argv": list(cmd.argv) if cmd else None,
        "shell": cmd.shell if cmd else None,
    }


def plan_dict(p: Plan) -> dict[str, Any]:
    return {"targets": [target_dict(t) for t in p.targets], "remote": [remote_dict(r) for r in p.remote]}


def data(obj: Any, fmt: str, out: TextIO) -> None:
    """-o json or -o yaml (PyYAML is imported only for yaml)."""
    if fmt == "yaml":
        import yaml

        yaml.safe_dump(obj, out, sort_keys=False, allow_unicode=True, width=1 << 16)
    else:
        dump(obj, out)


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


def symbols_text(binary: Binary, info: elf.ElfInfo, symbols: Sequence[Symbol], out: TextIO) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in info.sources().items()) or "none"
    stripped = "stripped" if info.stripped else "not stripped"
    out.write(f"# {binary.path}: {info.language}, {stripped}, {len(symbols)} functions ({counts})\n")
    for source, path in info.debug_files:
        out.write(f"# {source}: {path}\n")
    if not symbols:
        return
    # What table() prints, without its per-cell Python work (dockerd: ~440 ms to ~200 ms whole run):
    # addresses are always 16 digits, and the widest size is the largest one.
    size_w, source_w = len(str(max(map(_SIZE, symbols)))), max(len(s) for s in set(map(_SOURCE, symbols)))
    d = info.demangled
    for start in range(0, len(symbols), _CHUNK):
        part = map(_ROW, symbols[start : start + _CHUNK])
        rows = [f"{a:016x}  {z:<{size_w}}  {s:<{source_w}}  {_shown(n, d)}".rstrip() for n, a, z, s in part]
        out.write("\n".join(rows) + "\n")


def _shown(name: str, demangled: Mapping[str, str]) -> str:
    return f"{demangled[name]}  [{name}]" if name in demangled else name


def symbols_dict(binary: Binary, info: elf.ElfInfo, symbols: Sequence[Symbol]) -> dict[str, Any]:
    d = info.demangled
    return {
        "binary": binary_dict(binary),
        "sources": info.sources(),
        "debug_files": [{"source": src, "path": path} for src, path in info.debug_files],
        "symbols": [
            {"name": s.name, "address": s.address, "size": s.size, "source": s.source, "demangled": d.get(s.name)}
            for s in symbols
        ],
    }


def symbols_json(binary: Binary, info: elf.ElfInfo, symbols: Sequence[Symbol], out: TextIO) -> None:
    """``dump(symbols_dict(...))``, one symbol per line, written without building a dict per symbol.

    json's indent path is pure Python: 1.6 s for dockerd's 70k symbols. Here rows
    are f-strings, written a chunk at a time so one chunk's memory is reused for
    the next, and a chunk whose names are all plain printable ASCII (nearly all)
    skips the per-name JSON escaping: ~50 ms for dockerd (benchmarks/).
    """
    debug = [{"source": src, "path": path} for src, path in info.debug_files]
    head = json.dumps({"binary": binary_dict(binary), "sources": info.sources(), "debug_files": debug}, indent=2)
    out.write(f'{head[:-2]},\n  "symbols": [')  # head without its closing "\n}"
    d = info.demangled
    for start in range(0, len(symbols), _CHUNK):
        rows = _rows(symbols[start : start + _CHUNK], d)
        out.write(("\n    " if start == 0 else ",\n    ") + ",\n    ".join(rows))
    out.write("\n  ]\n}\n" if symbols else "]\n}\n")


_CHUNK = 4096
_NAME, _SIZE, _SOURCE, _ROW = itemgetter(0), itemgetter(2), itemgetter(3), itemgetter(0, 1, 2, 3)


def _rows(part: Sequence[Symbol], demangled: Mapping[str, str]) -> list[str]:
    # Sources are ctrace's own identifiers ("symtab", "dynsym", ...): never escaped.
    text = " ".join(map(_NAME, part))
    plain = text.isascii() and text.isprintable() and '"' not in text and "\\" not in text
    quoted: Callable[[str], str] = (lambda n: f'"{n}"') if plain else encode_basestring_ascii
    if not demangled:
        return [
            f'{{"name": {quoted(n)}, "address": {a}, "size": {z}, "source": "{s}", "demangled": null}}'
            for n, a, z, s in map(_ROW, part)
        ]
    dm = _json_or_null
    return [
        f'{{"name": {quoted(n)}, "address": {a}, "size": {z}, "source": "{s}", "demangled": {dm(demangled, n)}}}'
        for n, a, z, s in map(_ROW, part)
    ]


def _json_or_null(demangled: Mapping[str, str], name: str) -> str:
    return encode_basestring_ascii(demangled[name]) if name in demangled else "null"


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
    rows = [["PID", "NSPID", "CPID", "COMM", "CONTAINER", "CONTAINER ID", "EXE"]]
    for p in procs:
        c = p.container
        name = (c.name or "-") + ("*" if p.init else "") if c else "-"
        exe = p.exe + (" (deleted)" if p.deleted else "")
        rows.append([str(p.pid), chain(p.nspid), str(p.nspid[-1]), p.comm, name, c.id[:12] if c else "-", exe])
    table(rows, out)
