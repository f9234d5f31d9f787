"""Readable names for C++ and Rust symbols, for matching and display; probes keep the mangled name.

C++ (``_Z``) and Rust legacy (``_ZN...17h<hash>E``) go through libstdc++'s
``__cxa_demangle`` via ctypes: one call per name in-process, no subprocess.
Rust v0 (``_R``) is not something libstdc++ knows; binutils' ``c++filt`` (2.36+)
does, so those names go to it in one batch when it is installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache

from ctrace.elf.mangling import kinds
from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

_RUST_HASH = re.compile(r"::h[0-9a-f]{16}\Z")
_RUST_ESCAPES = {
    "$SP$": "@",
    "$BP$": "*",
    "$RF$": "&",
    "$LT$": "<",
    "$GT$": ">",
    "$LP$": "(",
    "$RP$": ")",
    "$C$": ",",
    "$u7e$": "~",
    "$u20$": " ",
    "$u27$": "'",
    "$u5b$": "[",
    "$u5d$": "]",
    "$u7b$": "{",
    "$u7d$": "}",
    "$u3b$": ";",
    "$u2b$": "+",
    "$u22$": '"',
}
_RUST_ESCAPE_RX = re.compile("|".join(re.escape(k) for k in _RUST_ESCAPES))


def demangle_all(names: Iterable[str]) -> dict[str, str]:
    """{mangled: readable} for the names that demangle; others are left out."""
    found = kinds(names)
    itanium, v0 = found.itanium, found.v0
    cxa = _cxa() if itanium else None
    out = cxa(itanium) if cxa else {}
    for name in found.legacy:  # only these can need _rust_legacy
        if name in out:
            out[name] = _rust_legacy(name, out[name])
    out.update(_cxxfilt(v0))
    return out


def _rust_legacy(mangled: str, text: str) -> str:
    """'a::b::h0123...' -> 'a::b' with '$LT$'-style escapes decoded; C++ text unchanged."""
    if not (mangled.startswith("_ZN") and mangled.endswith("E") and _RUST_HASH.search(text)):
        return text
    text = _RUST_HASH.sub("", text)
    text = _RUST_ESCAPE_RX.sub(lambda m: _RUST_ESCAPES[m.group(0)], text)
    return text.replace("..", "::")


@lru_cache(maxsize=1)
def cxa_address() -> int:
    """Where libstdc++'s __cxa_demangle is, found by the C speedups (0 without them)."""
    from ctrace.elf import speedups

    module = speedups.module
    return module.cxa_address() if module is not None else 0


@lru_cache(maxsize=1)
def _cxa() -> Callable[[list[str]], dict[str, str]] | None:
    from ctrace.elf import speedups

    # The C module finds __cxa_demangle itself: no ctypes (and ctypes.util's
    # tempfile, random, shutil) imported for it, a large share of a C++ library's listing.
    address = cxa_address()
    if not address:
        return _cxa_ctypes()

    def fast(names: list[str]) -> dict[str, str]:
        """The loop in C (in a few threads for many names) where the speedups are built."""
        now = speedups.module  # None again under CTRACE_PURE=1 or a test's patch: the twin runs
        if now is not None:
            return now.cxa_demangle(names, address)
        slow = _cxa_ctypes()
        return slow(names) if slow else {}

    return fast


@lru_cache(maxsize=1)
def _cxa_ctypes() -> Callable[[list[str]], dict[str, str]] | None:
    import ctypes

    try:
        lib = _libstdcxx(ctypes)
        fn = lib.__cxa_demangle
        libc = ctypes.CDLL(None)
    except (OSError, AttributeError):
        return None
    size_t_p = ctypes.POINTER(ctypes.c_size_t)
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, size_t_p, ctypes.POINTER(ctypes.c_int)]
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    def demangle(names: list[str]) -> dict[str, str]:
        """One malloc'd buffer for every name: __cxa_demangle writes into it, and
        reallocs it (returning the new one) when a name needs more room."""
        size, status = ctypes.c_size_t(256), ctypes.c_int(0)
        buf = libc.malloc(size.value)
        if not buf:
            return {}
        size_ref, status_ref, string_at = ctypes.byref(size), ctypes.byref(status), ctypes.string_at
        out = {}
        try:
            for name in names:
                got = fn(name.encode("utf-8", "surrogateescape"), buf, size_ref, status_ref)
                if got:
                    buf = got
                    if status.value == 0:
                        out[name] = string_at(got).decode("utf-8", "replace")
        finally:
            libc.free(buf)
        return out

    return demangle


def _libstdcxx(ctypes: Any) -> Any:
    """libstdc++ by its soname (stable since GCC 3.4), else where ldconfig says it is."""
    try:
        return ctypes.CDLL("libstdc++.so.6")
    except OSError:
        import ctypes.util

        return ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")


def _cxxfilt(names: list[str]) -> dict[str, str]:
    import shutil
    import subprocess

    tool = shutil.which("c++filt")
    if not names or tool is None:
        return {}
    try:
        res = subprocess.run([tool], input="\n".join(names) + "\n", capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    lines = res.stdout.splitlines()
    if res.returncode != 0 or len(lines) != len(names):
        return {}
    return {n: d for n, d in zip(names, lines) if d != n}
