"""The Docker Engine API client against a tiny real unix-socket server: framing, errors, timeouts.

The real daemon is asked in tests/test_docker.py (chunked inspect, and the same
answers as the docker SDK).
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ctrace.errors import EnvironmentProblem
from ctrace.resolvers import docker, engine

Serve = Callable[..., tuple[str, list[bytes]]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
LISTED = b'[{"Id": "abc123", "Names": ["/web"], "Image": "nginx"}]'


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ctrace-eng-") as d:  # short: sun_path holds 108 bytes
        yield Path(d)


@pytest.fixture
def serve(sock_dir: Path) -> Iterator[Serve]:
    """``serve(*pieces)``: a socket answering every connection with ``pieces``, sent one by one.

    Returns the socket path and the requests received. ``hang=True`` never answers."""
    listeners: list[socket.socket] = []

    def start(*pieces: bytes, hang: bool = False) -> tuple[str, list[bytes]]:
        path = str(sock_dir / f"{len(listeners)}.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen()
        listeners.append(listener)
        got: list[bytes] = []
        threading.Thread(target=_answer, args=(listener, pieces, hang, got), daemon=True).start()
        return path, got

    yield start
    for listener in listeners:
        listener.close()


def _answer(listener: socket.socket, pieces: tuple[bytes, ...], hang: bool, got: list[bytes]) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # closed at teardown
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            got.append(request)
            if hang:
                time.sleep(2)
                continue
            for piece in pieces:
                conn.sendall(piece)
                time.sleep(0.005)  # separate reads on the client side


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def test_content_length_body_in_pieces(serve: Serve) -> None:
    head = OK + b"Content-Length: %d\r\n\r\n" % len(LISTED)
    path, got = serve(head[:7], head[7:], LISTED[:10], LISTED[10:])
    assert engine.Engine(path).containers() == [{"Id": "abc123", "Names": ["/web"], "Image": "nginx"}]
    first, *headers = got[0].decode().rstrip("\r\n").split("\r\n")
    assert first == "GET /containers/json HTTP/1.1"
    assert "Connection: close" in headers and any(h.startswith("Host: ") for h in headers)


def test_chunked_body_split_across_reads(serve: Serve) -> None:
    body = chunked(b'{"Id": "abc123", ', b'"Name": "/web", "State": {"Pid": 42}}')
    body = body.replace(b"\r\n", b";ext=1\r\n", 1)  # a chunk extension is ignored
    trailer = b"X-Trailer: y\r\n\r\n"
    path, got = serve(OK + b"Transfer-Encoding: chunked\r\n\r\n", body[:5], body[5:30], body[30:-2] + trailer)
    data = engine.Engine(path).inspect("abc123")
    assert data == {"Id": "abc123", "Name": "/web", "State": {"Pid": 42}}
    assert got[0].startswith(b"GET /containers/abc123/json HTTP/1.1\r\n")


def test_body_delimited_by_close(serve: Serve) -> None:
    path, _ = serve(OK + b"\r\n", LISTED)
    assert engine.Engine(path).containers()[0]["Id"] == "abc123"


def test_ping(serve: Serve) -> None:
    path, got = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    engine.Engine(path).ping()
    assert got[0].startswith(b"GET /_ping ")
    path, _ = serve(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(EnvironmentProblem, match="cannot talk to the docker daemon: .*: HTTP status 503"):
        engine.Engine(path).ping()


def test_inspect_404_is_gone_but_list_404_is_an_error(serve: Serve) -> None:
    gone = b'{"message":"No such container: abc"}\n'
    path, _ = serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(gone), gone))
    assert engine.Engine(path).inspect("abc") is None
    with pytest.raises(EnvironmentProblem, match="error listing containers: No such container: abc"):
        engine.Engine(path).containers()


def test_error_status_gives_the_daemons_message(serve: Serve) -> None:
    said = chunked(b'{"message":"', b'devmapper: boom"}')
    path, _ = serve(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n" + said)
    with pytest.raises(EnvironmentProblem) as err:
        engine.Engine(path).inspect("0123456789abcdef")
    assert err.value.message == "docker daemon error inspecting 0123456789ab: devmapper: boom"
    assert err.value.exit_code == 3
    path, _ = serve(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 11\r\n\r\nproxy down\n")
    with pytest.raises(EnvironmentProblem, match="error listing containers: proxy down$"):
        engine.Engine(path).containers()


@pytest.mark.parametrize(
    ("pieces", "why"),
    [
        ((OK + b"Content-Length: 100\r\n\r\n[1, 2]",), "the body is 6 bytes, Content-Length says 100"),
        ((OK + b"Content-Length: \xb2\r\n\r\n[1, 2]",), "Content-Length says \u00b2"),  # latin-1: isdigit, not int
        ((OK + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n[1, 2]",), "Content-Length says 999"),
        ((OK + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"[1, 2]")[:-7],), "cut short"),
        ((OK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",), "bad chunk size"),
        ((OK,), "ends inside its headers"),
        ((b"",), "an empty response"),
        ((b"SSH-2.0-OpenSSH_9.2\r\n\r\n",), "not an HTTP status line"),
        ((OK + b"no colon here\r\n\r\n",), "not an HTTP header"),
    ],
)
def test_garbled_responses(serve: Serve, pieces: tuple[bytes, ...], why: str) -> None:
    path, _ = serve(*pieces)
    with pytest.raises(EnvironmentProblem, match=f"no docker daemon answers at {path}: .*{why}"):
        engine.Engine(path).containers()


@pytest.mark.parametrize("body", [b"hello", b"[" * 100_000])  # nested deeper than json recurses: RecursionError
def test_not_json(serve: Serve, body: bytes) -> None:
    path, _ = serve(OK + b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    with pytest.raises(EnvironmentProblem, match="error listing containers: the answer is not JSON"):
        engine.Engine(path).containers()


def test_timeout(serve: Serve) -> None:
    path, _ = serve(hang=True)
    start = time.monotonic()
    with pytest.raises(EnvironmentProblem, match=f"cannot talk to the docker daemon: {path}: timed out"):
        engine.Engine(path, timeout=0.2).containers()
    assert time.monotonic() - start < 1.5


def test_missing_and_refusing_sockets(sock_dir: Path) -> None:
    missing = str(sock_dir / "none.sock")
    with pytest.raises(EnvironmentProblem) as err:
        engine.Engine(missing).ping()
    assert err.value.message == f"cannot talk to the docker daemon: {missing}: No such file or directory"
    assert "start the docker daemon (systemctl start docker)" in err.value.hint
    refusing = socket.socket(socket.AF_UNIX)  # bound, never listening
    refusing.bind(str(sock_dir / "refusing.sock"))
    with pytest.raises(EnvironmentProblem, match="refusing.sock: Connection refused$"):
        engine.Engine(str(sock_dir / "refusing.sock")).ping()
    refusing.close()


def test_permission_denied_is_said_plainly() -> None:
    problem = engine.unreachable("/var/run/docker.sock: Permission denied")
    assert problem.message == "cannot talk to the docker daemon: permission denied on the socket"


def test_an_id_that_needs_escaping_names_no_container(serve: Serve) -> None:
    path, got = serve(OK + b"Content-Length: 2\r\n\r\n{}")
    assert engine.Engine(path).inspect("../../info") is None
    assert engine.Engine(path).inspect("x y") is None
    assert got == []


def test_dechunk() -> None:
    assert engine.dechunk(b"3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n") == b"abc0123456789"
    assert engine.dechunk(b"0\r\n\r\n") == b""
    for bad in (b"", b"3\r\nab", b"-1\r\nx\r\n0\r\n\r\n", b"3\r\nabcd\r\n0\r\n\r\n"):
        with pytest.raises(engine.BadResponse):
            engine.dechunk(bad)


def test_parse_headers_are_case_insensitive() -> None:
    resp = engine.parse(b"HTTP/1.0 200 OK\r\ncontent-LENGTH:  3 \r\nTRANSFER-encoding: identity\r\n\r\nabcdef")
    assert (resp.status, resp.body, resp.headers["content-length"]) == (200, b"abc", "3")


@pytest.mark.parametrize(
    ("env", "sdk"),
    [
        ({}, False),
        ({"DOCKER_HOST": "unix:///run/other.sock"}, False),
        ({"DOCKER_HOST": "tcp://127.0.0.1:2375"}, True),
        ({"DOCKER_HOST": "ssh://me@host"}, True),
        ({"DOCKER_HOST": "unix:///run/other.sock", "DOCKER_TLS_VERIFY": "1"}, True),
    ],
)
def test_client_picks_the_socket_or_the_sdk(
    monkeypatch: pytest.MonkeyPatch, serve: Serve, env: dict[str, str], sdk: bool
) -> None:
    path, got = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    monkeypatch.setattr(docker, "SOCKET", path)
    monkeypatch.setattr(docker.Sdk, "connect", classmethod(lambda cls: "the sdk"))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value.replace("/run/other.sock", path))
    api = docker.client()
    if sdk:
        assert api == "the sdk" and got == []
    else:
        assert isinstance(api, engine.Engine) and api.path == path and len(got) == 1
