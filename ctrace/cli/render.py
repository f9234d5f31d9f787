"""Text tables and JSON for results; output goes to the stream it is given."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring_ascii
from operator import itemgetter

from ctrace.cli.text import ns_text, ps_text, table
from ctrace.errors import NotTraceable
from ctrace.model import Binary, Container, Probe, Process, Remote, Symbol, Target
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, TextIO

    from ctrace.elf import ElfInfo
    from ctrace.plan.request import Plan
    from ctrace.proc.procfs import Status

DebugFiles = Sequence[tuple[str, str]]


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
        "where": p.where,
        "why_unsafe": p.why_unsafe or None,
        "bound": p.bound,
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
        "container": container_dict(p.container),
        "pod": p.pod._asdict() if p.pod else None,
    }


def container_dict(c: Container | None) -> dict[str, Any] | None:
    """The container, and the node container it runs in (kind) nested under "node"."""
    if c is None:
        return None
    d = c._asdict()
    d["node"] = container_dict(c.node)
    return d


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


def symbols_text(binary: Binary, info: ElfInfo, symbols: Sequence[Symbol], out: TextIO) -> None:
    out.write(text_head(binary.path, info.language, info.stripped, len(symbols), info.sources(), info.debug_files))
    out.write(text_rows(symbols, info.demangled))


def symbols_wide(
    binary: Binary, info: ElfInfo, symbols: Sequence[Symbol], attach: Sequence[tuple[str, str]], out: TextIO
) -> None:
    """-o wide: the text listing with a header, each function's file offset (what an address
    probe on a stripped file takes) and how bpftrace can attach to it."""
    out.write(text_head(binary.path, info.language, info.stripped, len(symbols), info.sources(), info.debug_files))
    rows = [["ADDRESS", "OFFSET", "SIZE", "SOURCE", "ATTACH", "NAME"]]
    d = info.demangled
    for (name, address, size_, source), (offset, how) in zip(symbols, attach):
        rows.append([f"{address:016x}", offset, str(size_), source, how, _shown(name, d)])
    table(rows, out)


def text_head(
    path: str, language: str, stripped: bool, count: int, sources: Mapping[str, int], debug_files: DebugFiles
) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sources.items()) or "none"
    lines = [f"# {path}: {language}, {'stripped' if stripped else 'not stripped'}, {count} functions ({counts})"]
    lines += [f"# {source}: {file}" for source, file in debug_files]
    return "\n".join(lines) + "\n"


def text_rows(symbols: Sequence[Symbol], demangled: Mapping[str, str]) -> str:
    """What table() prints, without its per-cell Python work (most of a run for 70k rows):
    addresses are always 16 digits, and the widest size is the largest one."""
    if not symbols:
        return ""
    size_w, source_w = len(str(max(map(_SIZE, symbols)))), max(len(s) for s in set(map(_SOURCE, symbols)))
    d = demangled
    rows = [f"{a:016x}  {z:<{size_w}}  {s:<{source_w}}  {_shown(n, d)}".rstrip() for n, a, z, s in symbols]
    return "\n".join(rows) + "\n"


def _shown(name: str, demangled: Mapping[str, str]) -> str:
    return f"{demangled[name]}  [{name}]" if name in demangled else name


def symbols_dict(binary: Binary, info: ElfInfo, symbols: Sequence[Symbol]) -> dict[str, Any]:
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


def symbols_json(binary: Binary, info: ElfInfo, symbols: Sequence[Symbol], out: TextIO) -> None:
    """``dump(symbols_dict(...))``, written without building a dict per symbol.

    json's indent path is pure Python, seconds for dockerd's 70k symbols. Here the
    head is json.dumps and the rows are f-strings (json_rows).
    """
    out.write(json_head(binary, info.sources(), info.debug_files))
    out.write(json_rows(symbols, info.demangled))
    out.write(JSON_TAIL)


JSON_TAIL = "]\n}\n"


def json_head(binary: Binary, sources: Mapping[str, int], debug_files: DebugFiles) -> str:
    debug = [{"source": src, "path": path} for src, path in debug_files]
    head = json.dumps({"binary": binary_dict(binary), "sources": sources, "debug_files": debug}, indent=2)
    return f'{head[:-2]},\n  "symbols": ['  # head without its closing "\n}"


def json_rows(symbols: Sequence[Symbol], demangled: Mapping[str, str]) -> str:
    """The "symbols" array's rows, one per line, and the indent of its closing "]".

    A chunk of names that are all plain printable ASCII (nearly all) skips the
    per-name JSON escaping, the largest cost left for 70k rows (benchmarks/).
    """
    if not symbols:
        return ""
    chunks = [",\n    ".join(_rows(symbols[i : i + _CHUNK], demangled)) for i in range(0, len(symbols), _CHUNK)]
    return "\n    " + ",\n    ".join(chunks) + "\n  "


_CHUNK = 4096
_NAME, _SIZE, _SOURCE = itemgetter(0), itemgetter(2), itemgetter(3)


def _rows(part: Sequence[Symbol], demangled: Mapping[str, str]) -> list[str]:
    # Sources are ctrace's own identifiers ("symtab", "dynsym", ...): never escaped.
    text = " ".join(map(_NAME, part))
    plain = text.isascii() and text.isprintable() and '"' not in text and "\\" not in text
    quoted: Callable[[str], str] = (lambda n: f'"{n}"') if plain else encode_basestring_ascii
    if not demangled:
        return [
            f'{{"name": {quoted(n)}, "address": {a}, "size": {z}, "source": "{s}", "demangled": null}}'
            for n, a, z, s in part
        ]
    dm = _json_or_null
    return [
        f'{{"name": {quoted(n)}, "address": {a}, "size": {z}, "source": "{s}", "demangled": {dm(demangled, n)}}}'
        for n, a, z, s in part
    ]


def _json_or_null(demangled: Mapping[str, str], name: str) -> str:
    return encode_basestring_ascii(demangled[name]) if name in demangled else "null"


def file_listing(path: str, cache_dir: str | None, fmt: str, out: TextIO) -> None:
    """``ctrace symbols FILE`` (json or text, every function) through the listing cache.

    The rows of a listing do not depend on the path, so they are kept rendered
    (elf/listing.cached); a second call reads them back and writes the bytes out,
    without decoding a symbol or formatting a row.
    """
    from ctrace.elf import file_binary, listing

    rows = json_rows if fmt == "json" else text_rows
    got = listing.cached(
        path, cache_dir, fmt, lambda info: rows(info.symbols, info.demangled), lambda p: listing.build(p, fmt), True
    )
    binary = file_binary(path, got.build_id, got.stripped, got.language)
    if fmt == "json":
        head, tail = json_head(binary, got.sources, got.debug_files), JSON_TAIL
    else:
        head, tail = text_head(binary.path, got.language, got.stripped, got.functions, got.sources, got.debug_files), ""
    out.write(head)
    buffer = getattr(out, "buffer", None)
    if buffer is None or (getattr(out, "encoding", "") or "").lower().replace("-", "") != "utf8":
        rows_bytes = got.rows if isinstance(got.rows, bytes) else got.rows.read()
        out.write(rows_bytes.decode("utf-8", "surrogateescape"))
    elif isinstance(got.rows, bytes):
        out.flush()
        buffer.write(got.rows)
    else:
        out.flush()
        buffer.flush()
        try:
            fd = buffer.fileno()
        except (OSError, ValueError):  # a stream with no file behind it (io.UnsupportedOperation)
            buffer.write(got.rows.read())
        else:
            got.rows.copy_to(fd)
    out.write(tail)


def ns_dict(pid: int, status: Status, namespaces: dict[str, int]) -> dict[str, Any]:
    return {
        "pid": pid,
        "nspid": list(status.nspid),
        "nstgid": list(status.nstgid),
        "nspgid": list(status.nspgid),
        "nssid": list(status.nssid),
        "namespaces": namespaces,
        "in_child_pid_namespace": len(status.nspid) > 1,
    }


def show(
    fmt: str,
    out: TextIO,
    doc: Callable[[], Any],
    text: Callable[[TextIO], None],
    wide: Callable[[TextIO], None] | None = None,
    stream: Callable[[TextIO], None] | None = None,
) -> None:
    """The one place ``-o`` is read: json and yaml dump ``doc()`` (json through ``stream``
    where a command writes it as it goes), wide is the command's wide table where it has
    one, text otherwise. A new format is a branch here."""
    if fmt == "json" and stream is not None:
        stream(out)
    elif fmt in ("json", "yaml"):
        data(doc(), fmt, out)
    elif fmt == "wide" and wide is not None:
        wide(out)
    else:
        text(out)


def wants_details(fmt: str) -> bool:
    """Whether the format shows more than the text table (ps: user, start time, memory)."""
    return fmt != "text"


def listable(fmt: str) -> bool:
    """Formats ``file_listing`` writes straight from the cached listing."""
    return fmt in ("json", "text")


def owner_dict(proc: Process | None) -> dict[str, Any]:
    """The container and pod of a PID, for ``ns``."""
    if proc is None:
        return {"container": None, "pod": None}
    d = process_dict(proc)
    return {"container": d["container"], "pod": d["pod"]}


def ps_dict(p: Process, details: dict[str, object] | None) -> dict[str, object]:
    d = process_dict(p)
    d["exe"] = p.exe
    d["deleted"] = p.deleted
    d["init"] = p.init
    d["container_pid"] = p.nspid[-1]  # the PID `docker top` does not show: the one inside the container
    d.update(details or {"user": None, "started": None, "rss": None})
    return d


def unreachable(remotes: Sequence[Remote]) -> None:
    """-q prints commands only: a pod with none to print is an error, not an empty line."""
    missing = [r for r in remotes if r.command is None]
    if missing:
        pod = missing[0].pod
        raise NotTraceable(
            f"pod {pod.namespace}/{pod.name} runs on node {pod.node}, and no ctrace node agent runs there: "
            "no command to print",
            f"run ctrace on node {pod.node}, or drop -q to see what was found",
        )


def plan(result: Plan, fmt: str, quiet: bool, out: TextIO) -> None:
    """``ctrace target``'s answer: with -q the command lines only, else the plan in ``fmt``."""
    from ctrace.cli import text

    if quiet:
        text.quiet(result.targets, result.remote, out)
        unreachable(result.remote)
        return
    show(
        fmt,
        out,
        lambda: plan_dict(result),
        lambda o: text.plan(result.targets, result.remote, o),
        wide=lambda o: text.plan(result.targets, result.remote, o, wide=True),
    )


def symbols(binary: Binary, info: ElfInfo, chosen: Sequence[Symbol], fmt: str, out: TextIO) -> None:
    """``ctrace symbols``: json streamed, yaml as data, wide with each function's attach columns."""

    def wide(o: TextIO) -> None:
        from ctrace.bpftrace.sites import attach_columns

        symbols_wide(binary, info, chosen, attach_columns(binary.host_path, info, chosen), o)

    show(
        fmt,
        out,
        lambda: symbols_dict(binary, info, chosen),
        lambda o: symbols_text(binary, info, chosen, o),
        wide=wide,
        stream=lambda o: symbols_json(binary, info, chosen, o),
    )


def ps(procs: Sequence[Process], details: dict[int, dict[str, object]], fmt: str, out: TextIO) -> None:
    """``ctrace ps``: the table (with ``details`` when wide), or every process as data."""
    show(
        fmt,
        out,
        lambda: {"processes": [ps_dict(p, details.get(p.pid)) for p in procs]},
        lambda o: ps_text(procs, o),
        wide=lambda o: ps_text(procs, o, details),
    )


def ns(data: dict[str, Any], fmt: str, out: TextIO) -> None:
    """``ctrace ns``: the PID chain, container, pod and namespaces."""
    show(fmt, out, lambda: data, lambda o: ns_text(data, o))
