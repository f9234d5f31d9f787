"""Checks of JSON values for protocol.py: each takes a value and where it is (for the
message), returns the value (lists as tuples) or raises ProtocolError."""

from __future__ import annotations

import json
import math
import re

from ctrace.errors import CtraceError
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    Check = Callable[[Any, str], Any]


class ProtocolError(CtraceError):
    """A line that is not a message of PROTOCOL.md."""

    exit_code = 2
    default_hint = "client and agent must speak PROTOCOL.md: run the same ctrace version on both"


def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: a key given twice is refused (json keeps the last one)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ProtocolError(f"field {key[:60]!r} is given twice")
        out[key] = value
    return out


def no_constant(name: str) -> None:
    raise ProtocolError(f"{name} is not a number JSON allows")


def peek_version(line: bytes) -> str | None:
    """The "version" of a line that is no message this version knows, when it has one: a
    newer client's request (a field added) is a version mismatch before it is a bad field."""
    try:
        data = json.loads(line[: 1 << 20])
    except (ValueError, RecursionError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return version if isinstance(version, str) else None


def json_kind(value: object) -> str:
    kinds = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def text(limit: int, lines: bool = False, empty: bool = True) -> Check:
    def check(value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise ProtocolError(f"{where} must be a string, not {json_kind(value)}")
        if len(value) > limit:
            raise ProtocolError(f"{where} is {len(value)} characters long, over the limit of {limit}")
        if "\0" in value or (not lines and ("\n" in value or "\r" in value)):
            raise ProtocolError(f"{where} holds a NUL or a line break")
        if not empty and not value:
            raise ProtocolError(f"{where} is empty")
        return value

    return check


def pattern(regex: str, limit: int, what: str) -> Check:
    compiled = re.compile(regex)

    def check(value: Any, where: str) -> str:
        found: str = text(limit, empty=False)(value, where)
        if not compiled.fullmatch(found):
            raise ProtocolError(f"{where} {found[:80]!r} is not {what}")
        return found

    return check


def optional(inner: Check) -> Check:
    return lambda value, where: None if value is None else inner(value, where)


def integer(low: int, high: int) -> Check:
    def check(value: Any, where: str) -> int:
        if type(value) is not int:
            raise ProtocolError(f"{where} must be an integer, not {json_kind(value)}")
        if not low <= value <= high:
            raise ProtocolError(f"{where} is {value}, outside {low}..{high}")
        return value

    return check


def number(low: float, high: float) -> Check:
    def check(value: Any, where: str) -> float:
        if type(value) not in (int, float):
            raise ProtocolError(f"{where} must be a number, not {json_kind(value)}")
        if not math.isfinite(value):
            raise ProtocolError(f"{where} must be a finite number")
        if not low < value <= high:
            raise ProtocolError(f"{where} is {value}, outside ({low}, {high}]")
        return float(value)

    return check


def choice(values: Iterable[str]) -> Check:
    allowed = tuple(values)

    def check(value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ProtocolError(f"{where} is {str(value)[:40]!r}: expected one of {', '.join(allowed)}")
        return value

    return check


def listof(inner: Check, low: int, high: int) -> Check:
    def check(value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ProtocolError(f"{where} must be a list, not {json_kind(value)}")
        if not low <= len(value) <= high:
            raise ProtocolError(f"{where} has {len(value)} items; {low}..{high} are allowed")
        return tuple(inner(v, f"{where}[{i}]") for i, v in enumerate(value))

    return check
