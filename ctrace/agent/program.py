"""``--run -e PROGRAM``: the user's own bpftrace program, on the target, bound to it.

Placeholders as kubectl-trace spells them: ``$path`` the target's binary (or --lib's
library) as bpftrace can open it from here, ``$pid`` the target process's host PID,
``$container_pid`` the host PID of its container's first process (``$pid`` outside a
container). Every probe but BEGIN, END and the timers (interval, iter) gets the
binding ctrace's own programs carry (binding.py: the container's mount namespace,
or the PID map), joined with the probe's own predicate, so a replica or another
user of the same file stays out; the binding's BEGIN and END statements are merged
with the program's own (bpftrace 0.17 takes one of each). The program is never run
with --unsafe: system() and friends stay refused by bpftrace itself.
"""

from __future__ import annotations

import re

from ctrace.errors import UsageError
from ctrace.record import Record

PLACEHOLDER = re.compile(r"\$(container_pid|pid|path)\b")
PROBE_TYPES = re.compile(
    r"(uprobe|uretprobe|usdt|kprobe|kretprobe|tracepoint|rawtracepoint|profile|software|hardware|watchpoint"
    r"|asyncwatchpoint|fentry|fexit|kfunc|kretfunc|interval|iter|BEGIN|END|self|bench"
    r"|u|ur|U|k|kr|t|rt|p|s|h|w|aw|f|fr|i|it)(:|\b)"
)
UNBOUND = ("BEGIN", "END", "interval", "i", "iter", "it", "self", "bench")


class Item(Record):
    """One top-level part of a program: a probe block, or anything else (config, struct, #include)."""

    header: str  # the text before the block: attach points and predicate, or "config =" ...
    body: str | None  # the block's text between its braces; None for a line without a block


def items(text: str) -> list[Item]:
    """The top-level parts of a program, by braces outside strings and comments."""
    out: list[Item] = []
    header: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#" and "".join(header).strip(" \t;") in ("", "\n") and _line_start(text, i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(Item(text[i:end], None))
            header, i = [], end
        elif c == "{":
            close = _matching(text, i)
            out.append(Item("".join(header), text[i + 1 : close]))
            header, i = [], close + 1
        else:
            skip = _skip(text, i)
            token = text[i:skip]
            header.append(" " if token.startswith(("//", "/*")) else token)  # a comment says nothing to bpftrace
            i = skip
    if "".join(header).strip(" \t\n;"):
        raise UsageError(f"the program ends with {''.join(header).strip()[:60]!r} outside a block", _HINT)
    return out


_HINT = "a bpftrace program: probe { actions } ..., e.g. 'uprobe:$path:main { @[pid] = count(); }'"


def _line_start(text: str, i: int) -> bool:
    return i == 0 or text[text.rfind("\n", 0, i) + 1 : i].strip() == ""


def _skip(text: str, i: int) -> int:
    """The index after the token at ``i``: a string literal or a comment whole, else one character."""
    if text[i] == '"':
        j = i + 1
        while j < len(text) and text[j] != '"':
            j += 2 if text[j] == "\\" else 1
        if j >= len(text):
            raise UsageError("the program has a string without its closing quote", _HINT)
        return j + 1
    if text.startswith("//", i):
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        if end < 0:
            raise UsageError("the program has a comment without its closing */", _HINT)
        return end + 2
    return i + 1


def _matching(text: str, i: int) -> int:
    depth = 0
    while i < len(text):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i = _skip(text, i)
    raise UsageError("the program has a '{' without its '}'", _HINT)


def kind(header: str) -> str | None:
    """The probe type of a block's first attach point, or None for a block that is no probe."""
    m = PROBE_TYPES.match(header.strip(" \t\n;"))
    return m.group(1) if m else None


def split_predicate(header: str) -> tuple[str, str | None]:
    """(attach points, predicate): the predicate starts at the first '/' after whitespace
    outside quotes (attach points hold no unquoted space) and ends at the last '/'."""
    i = 0
    while i < len(header):
        if header[i] == "/" and i > 0 and header[i - 1].isspace():
            last = header.rfind("/")
            if last <= i:
                raise UsageError(f"the predicate of {header.strip()[:60]!r} has no closing '/'", _HINT)
            return header[:i].strip(), header[i + 1 : last].strip()
        i = _skip(header, i)
    return header.strip(), None


def bound(text: str, predicate: str) -> tuple[str, list[str], list[str]]:
    """The program's probes with ``predicate`` joined to each but BEGIN, END and the timers,
    and the bodies of its BEGIN and END blocks (for binding.program to merge)."""
    parts: list[str] = []
    begin: list[str] = []
    end: list[str] = []
    for item in items(text):
        probe = kind(item.header)
        if item.body is None or probe is None:
            parts.append(item.header if item.body is None else f"{item.header}{{{item.body}}}")
        elif probe in ("BEGIN", "END") and item.header.strip(" \t\n;") == probe:
            (begin if probe == "BEGIN" else end).append(_statements(item.body))
        elif probe in UNBOUND or not predicate:
            parts.append(f"{item.header.strip(' ;')} {{{item.body}}}")
        else:
            points, own = split_predicate(item.header.strip(" \t\n;"))
            test = f"({predicate}) && ({own})" if own else predicate
            parts.append(f"{points} /{test}/ {{{item.body}}}")
    if not any(kind(p) not in (None, *UNBOUND) for p in parts) and not begin:
        raise UsageError("the program has no probe", _HINT)
    return "\n".join(parts), begin, end


def _statements(body: str) -> str:
    """A block's statements, ending so that more may follow them."""
    body = body.strip()
    return body if not body or body.endswith((";", "}")) else body + ";"


class Values(Record):
    path: str  # as it stands in an attach point (emit.quote_path)
    pid: int
    container_pid: int


def substituted(text: str, values: Values) -> str:
    found = {"path": values.path, "pid": str(values.pid), "container_pid": str(values.container_pid)}
    return PLACEHOLDER.sub(lambda m: found[m.group(1)], text)
