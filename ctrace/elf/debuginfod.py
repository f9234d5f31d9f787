"""Debug files fetched by build-id from debuginfod servers, and kept in ctrace's cache.

With ``DEBUGINFOD_URLS`` set (space-separated server URLs, as elfutils reads it),
a function that neither the binary nor a local debug file names is looked for in
the debug file a server has for the binary's build-id: ``GET URL/buildid/HEX/debuginfo``
(debuginfod's HTTP API). The file is kept under ``$XDG_CACHE_HOME/ctrace/debuginfod/HEX/``,
where debuginfo.locate finds it on later runs without the network. ``DEBUGINFOD_TIMEOUT``
(seconds, elfutils' name) bounds each request.
"""

from __future__ import annotations

import os
import re

DEFAULT_TIMEOUT = 30.0
MAX_BYTES = 2 << 30  # a debug file larger than this is not a debug file
_HEX = re.compile(r"[0-9a-f]{8,128}\Z")


def urls() -> list[str]:
    return [
        u.rstrip("/") for u in os.environ.get("DEBUGINFOD_URLS", "").split() if u.startswith(("http://", "https://"))
    ]


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ctrace", "debuginfod")


def cached_path(build_id: str | None) -> str | None:
    """Where a fetched debug file for ``build_id`` is kept (whether or not it is there)."""
    if not build_id or not _HEX.match(build_id):
        return None
    return os.path.join(cache_root(), build_id, "debuginfo")


def fetch(build_id: str | None) -> tuple[str | None, list[str]]:
    """The cached debug file for ``build_id``, fetched from the first server that has it,
    and what each server that did not said (for the error a user reads)."""
    path = cached_path(build_id)
    if path is None:
        return None, []
    if os.path.isfile(path):
        return path, []
    said = []
    for url in urls():
        got = _get(f"{url}/buildid/{build_id}/debuginfo", path)
        if got is None:
            return path, []
        said.append(f"{url}: {got}")
    return None, said


def _get(url: str, path: str) -> str | None:
    """Download ``url`` to ``path`` (None), or why not."""
    import urllib.error
    import urllib.request

    try:
        timeout = float(os.environ.get("DEBUGINFOD_TIMEOUT") or DEFAULT_TIMEOUT)
    except ValueError:
        timeout = DEFAULT_TIMEOUT
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(tmp, "wb") as f:
                _copy(resp, f)
        os.replace(tmp, path)
        return None
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}" + (" (no debug file for this build-id)" if err.code == 404 else "")
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        return f"unreachable ({reason})"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _copy(resp: object, f: object) -> None:
    total = 0
    read, write = resp.read, f.write  # type: ignore[attr-defined]
    while chunk := read(1 << 20):
        total += len(chunk)
        if total > MAX_BYTES:
            raise ValueError(f"more than {MAX_BYTES >> 20} MB")
        write(chunk)
