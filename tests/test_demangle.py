"""C++ and Rust names: demangled for matching and display, mangled in the command."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from ctrace import elf
from tests.conftest import Bpftrace, Built, Processes, ctrace, need, need_bpftrace, run
from tests.symfix import every_command_fires, one_probe


def test_cpp_demangled_for_matching_and_display(built: Built) -> None:
    res = ctrace("symbols", str(built["acme"]), "--func", "handshake", "-o", "json")
    assert res.code == 0, res.err
    (s,) = res.json()["symbols"]
    assert (s["name"], s["demangled"]) == ("_ZN4acme3net4Conn9handshakeEi", "acme::net::Conn::handshake(int)")
    res = ctrace("symbols", str(built["acme"]), "--func", "acme::net::twice<int>(int)", "-o", "json")
    assert res.code == 0, res.err
    assert [s["name"] for s in res.json()["symbols"]] == ["_ZN4acme3net5twiceIiEET_S2_"]


@pytest.mark.bpftrace
def test_cpp_probe_shows_both_names_and_fires(built: Built, processes: Processes, bpftrace: Bpftrace) -> None:
    need_bpftrace()
    proc = processes.start(built["acme"])
    probe = one_probe(f"pid:{proc.pid}", "--func", "handshake", *bpftrace.args)
    assert probe["symbol"] == "_ZN4acme3net4Conn9handshakeEi"
    assert probe["demangled"] == "acme::net::Conn::handshake(int)"
    assert "_ZN4acme3net4Conn9handshakeEi" in probe["shell"]  # bpftrace 0.17 has no cpp: probes
    every_command_fires(probe, "acme::net::Conn::handshake(int)", proc.pid, bpftrace)


RUST = """
pub mod acme {
    pub struct Conn;
    impl Conn {
        #[inline(never)]
        pub fn handshake(&self, round: u64) -> u64 { round * 3 }
    }
}
fn main() { println!("{}", acme::Conn.handshake(std::env::args().count() as u64)); }
"""


@pytest.mark.parametrize("mangling", ["legacy", "v0"])
def test_rust_demangled(tmp_path: Path, mangling: str) -> None:
    rustc = shutil.which("rustc")
    need(rustc is not None, "rustc is not installed")
    (tmp_path / "m.rs").write_text(RUST)
    flags = ["-C", "symbol-mangling-version=v0"] if mangling == "v0" else []  # legacy is the default
    run([str(rustc), *flags, "-o", str(tmp_path / "m"), str(tmp_path / "m.rs")])
    info = elf.inspect(str(tmp_path / "m"))
    hits = [(n, d) for n, d in info.demangled.items() if d.endswith("handshake")]
    assert hits, "handshake was not demangled"
    name, shown = hits[0]
    assert name.startswith("_R" if mangling == "v0" else "_ZN")
    assert "acme::Conn" in shown and not re.search(r"::h[0-9a-f]{16}", shown)
    res = ctrace("symbols", str(tmp_path / "m"), "--func", "handshake", "-o", "json")
    assert res.code == 0, res.err
    assert [s["name"] for s in res.json()["symbols"]] == [name]


def test_rust_legacy_escapes_decoded() -> None:
    from ctrace.elf.demangle import _rust_legacy

    text = "<alloc..vec..Vec$LT$T$GT$$u20$as$u20$core..ops..Drop$GT$::drop::h0123456789abcdef"
    assert _rust_legacy("_ZN4drop17h0123456789abcdefE", text) == "<alloc::vec::Vec<T> as core::ops::Drop>::drop"
    assert _rust_legacy("_ZN4acme3net4Conn9handshakeEi", "acme::net::Conn::handshake(int)") == (
        "acme::net::Conn::handshake(int)"
    )


def test_demangling_reuses_one_buffer_and_grows_it() -> None:
    """Names before and after one that needs more than the first buffer come out whole."""
    from ctrace.elf import demangle

    # 10 distinct 63-character namespaces: 650 characters demangled, past the 256-byte first
    # buffer (libstdc++ refuses names whose text passes about 1 KiB)
    parts = [f"n{i:02d}" + "x" * 60 for i in range(10)]
    long = "_ZN" + "".join(f"{len(p)}{p}" for p in parts) + "Ev"
    names = ["_ZN4acme3net4Conn9handshakeEi", long, "_Z3fooi", "_Znot_mangled_at_all", "main"]
    got = demangle.demangle_all(names)
    assert got[long] == "::".join(parts) + "()" and len(got[long]) > 256
    assert got["_ZN4acme3net4Conn9handshakeEi"] == "acme::net::Conn::handshake(int)"
    assert got["_Z3fooi"] == "foo(int)"
    assert "_Znot_mangled_at_all" not in got and "main" not in got


def test_demangling_with_one_buffer_equals_a_fresh_buffer_per_name() -> None:
    """Thousands of real names (libstdc++'s own) through the reused buffer give what
    __cxa_demangle gives each name on its own (its documented malloc-per-call use)."""
    import ctypes

    from ctrace.elf import demangle
    from ctrace.elf.reader import open_elf

    path = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
    need(Path(path).exists(), f"{path} is not installed")
    names = sorted({s.name for s in open_elf(path).symbols() if s.name.startswith("_Z")})
    assert len(names) > 1000
    fn = ctypes.CDLL(path).__cxa_demangle
    fn.restype = ctypes.c_void_p
    free = ctypes.CDLL(None).free
    free.argtypes = [ctypes.c_void_p]
    want = {}
    for name in names:
        status = ctypes.c_int(0)
        got = fn(name.encode(), None, None, ctypes.byref(status))
        if got and status.value == 0:
            want[name] = ctypes.string_at(got).decode()
        free(got)
    assert len(want) > 1000
    assert demangle.demangle_all(names) == want


def test_demangling_in_c_equals_the_ctypes_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """_speedups.cxa_demangle against the Python loop it stands in for, on libstdc++'s names."""
    from ctrace.elf import demangle, speedups
    from ctrace.elf.reader import open_elf

    path = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
    need(Path(path).exists(), f"{path} is not installed")
    need(speedups.module is not None, "ctrace/elf/_speedups.c is not built (pip install -e . builds it)")
    names = sorted({s.name for s in open_elf(path).symbols() if s.name.startswith("_Z")})
    names += ["_Z" + "N" * 3000, "_Zcaf\udcff", "_ZN4acme3net4Conn9handshakeEi"]  # refused, not UTF-8, fine
    fast = demangle.demangle_all(names)
    monkeypatch.setattr(speedups, "module", None)
    assert fast == demangle.demangle_all(names) and len(fast) > 1000


def test_name_kinds_in_c_equal_the_python_twin() -> None:
    """elf.kinds in C (one pass) against its Python twin, on libstdc++'s names and made-up Rust ones."""
    from ctrace import elf
    from ctrace.elf import speedups
    from ctrace.elf.reader import open_elf

    need(speedups.module is not None, "ctrace/elf/_speedups.c is not built (pip install -e . builds it)")
    path = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
    need(Path(path).exists(), f"{path} is not installed")
    names = [s.name for s in open_elf(path).symbols()]
    legacy = "_ZN4core3fmt5write17h0123456789abcdefE"
    made = [legacy, "_ZN3foo17h0123456789abcdeE", "_RNvCs1234_4main4main", "__rust_alloc", "rust_begin_unwind"]
    made += ["rust_begin_unwinds", "_Z", "_R", "_Zcaf\udcff", "_ZNé17h0123456789abcdefE", "main", ""]
    for sample in (names, made, made[4:], []):
        fast = speedups.module.name_kinds(list(sample))
        assert elf.Kinds(*fast) == elf._kinds(list(sample))
    got = elf.kinds(made)
    assert got.legacy == [legacy, "_ZNé17h0123456789abcdefE"] and got.v0 == ["_RNvCs1234_4main4main", "_R"]
    assert got.runtime and not elf.kinds(made[5:]).runtime
