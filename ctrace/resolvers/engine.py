"""The Docker Engine API over the local unix socket: GET and JSON, nothing more.

``import docker`` brings requests, urllib3, http.client and email: ~80 ms of
imports, and ``ctrace target`` on a container took ~100 ms longer with it
(~315 ms against ~220 ms, dockerd 20.10), for three questions to the daemon. So
this module speaks HTTP itself with ``socket`` and ``json``; not with
``http.client``, which imports the email package (~15 ms). A daemon over TCP,
TLS or ssh is still reached through the docker SDK (``docker.py``).

Each request is HTTP/1.1 with ``Connection: close``: the response ends where
the daemon closes the socket, and its body is framed by Content-Length or, when
dockerd writes more than Go's 2 KB response buffer (a container's inspect
JSON), by chunked transfer coding.
"""

from __future__ import annotations

import json
import re
import socket

from ctrace.errors import EnvironmentProblem
from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import Any, TypedDict

    class Summary(TypedDict):
        """The fields of GET /containers/json ctrace reads."""

        Id: str
        Names: list[str]
        Image: str


TIMEOUT = 15.0  # seconds per socket operation, the docker SDK's timeout ctrace used
# No API version in paths: the daemon answers at its own. A pinned old version is
# refused where the minimum rose (Docker 29: 1.44, moby/moby#51186); a new one by
# older daemons (20.10 serves up to 1.41). The fields ctrace reads are in all of them.
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+\Z")  # IDs and docker's name alphabet: nothing to escape
_HEX = re.compile(rb"[0-9A-Fa-f]+\Z")


class Response(Record):
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes  # de-chunked


class BadResponse(ValueError):
    """Bytes that are not a whole HTTP response."""


def unreachable(reason: str) -> EnvironmentProblem:
    """No daemon to talk to, said the same way for the socket and the SDK."""
    if "ermission denied" in reason:
        reason = "permission denied on the socket"
    return EnvironmentProblem(
        f"cannot talk to the docker daemon: {reason}",
        "start the docker daemon (systemctl start docker), and run as root or a member of the docker group",
    )


class Engine:
    """The daemon at a unix socket: ``containers()`` and ``inspect()``, as docker.py's SDK client."""

    def __init__(self, path: str, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    def ping(self) -> None:
        resp = self.get("/_ping")
        if resp.status != 200:
            raise unreachable(f"{self.path}: {message(resp)}")

    def containers(self) -> list[Summary]:
        found: list[Summary] = loads(self.get("/containers/json"), "listing containers")
        return found

    def inspect(self, ident: str) -> dict[str, Any] | None:
        """One container's details; None when there is none (it exited between list and inspect)."""
        if not _SEGMENT.match(ident):
            return None  # no container has an ID or name with other characters
        resp = self.get(f"/containers/{ident}/json")
        if resp.status == 404:
            return None
        data: dict[str, Any] = loads(resp, f"inspecting {ident[:12]}")
        return data

    def get(self, target: str) -> Response:
        try:
            return parse(request(self.path, target, self.timeout))
        except OSError as err:
            raise unreachable(f"{self.path}: {err.strerror or err}") from err
        except ValueError as err:
            raise EnvironmentProblem(f"no docker daemon answers at {self.path}: {err}") from err


def request(path: str, target: str, timeout: float = TIMEOUT) -> bytes:
    """The raw response to ``GET target`` on the socket at ``path``, read until the daemon closes it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode("ascii"))
        chunks: list[bytes] = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> Response:
    """Status, headers and body of one HTTP/1.x response; BadResponse when it is cut short or garbled."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise BadResponse("the response ends inside its headers" if raw else "an empty response")
    first, *lines = head.decode("latin-1").split("\r\n")
    version, _, status = first.partition(" ")
    code = status[:3]
    if not version.startswith("HTTP/1.") or not (code.isdigit() and code.isascii()):
        raise BadResponse(f"not an HTTP status line: {first[:60]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise BadResponse(f"not an HTTP header: {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return Response(int(code), headers, body(headers, rest))


def body(headers: dict[str, str], rest: bytes) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return dechunk(rest)
    length = headers.get("content-length")
    if length is None:
        return rest  # delimited by the close
    if not (length.isascii() and length.isdigit() and len(length) <= 20) or len(rest) < int(length):
        raise BadResponse(f"the body is {len(rest)} bytes, Content-Length says {length}")
    return rest[: int(length)]


def dechunk(data: bytes) -> bytes:
    """The body carried by chunked transfer coding (RFC 9112 section 7.1); trailers are dropped."""
    out: list[bytes] = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        size_field = data[pos:end].split(b";")[0].strip()
        if end < 0 or not _HEX.match(size_field):
            raise BadResponse(f"bad chunk size at byte {pos}")
        size = int(size_field, 16)
        if size == 0:
            return b"".join(out)
        start = end + 2
        if data[start + size : start + size + 2] != b"\r\n":
            raise BadResponse(f"a chunk of {size} bytes at byte {start} is cut short")
        out.append(data[start : start + size])
        pos = start + size + 2


def message(resp: Response) -> str:
    """What the daemon says went wrong: its JSON ``message``, else the body's first line, else the status."""
    try:
        data = json.loads(resp.body)
    except (ValueError, RecursionError):
        data = None
    said = data.get("message") if isinstance(data, dict) else None
    text = str(said or resp.body.decode("utf-8", "replace").strip().partition("\n")[0])
    return text or f"HTTP status {resp.status}"


def loads(resp: Response, doing: str) -> Any:
    """The JSON of a 2xx response; EnvironmentProblem with the daemon's message otherwise."""
    if not 200 <= resp.status < 300:
        raise EnvironmentProblem(f"docker daemon error {doing}: {message(resp)}")
    try:
        return json.loads(resp.body)
    except (ValueError, RecursionError) as err:  # RecursionError: nested deeper than the decoder goes
        raise EnvironmentProblem(f"docker daemon error {doing}: the answer is not JSON ({err})") from err
