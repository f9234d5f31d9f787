"""The on-disk symbol cache (elf/cache.py): same answer as a fresh parse, and never trusted blindly."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ctrace import elf
from ctrace.elf import cache, columns, listing, speedups
from ctrace.elf.reader import open_elf
from ctrace.model import Symbol
from tests.conftest import Built, ctrace


def cache_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.exists() else []


@pytest.mark.parametrize("name", ["hello-dyn", "acme", "cilium-agent", "hello-stripped"])
def test_hit_returns_identical_info(built: Built, tmp_path: Path, name: str) -> None:
    path = str(built[name])
    calls: list[str] = []

    def compute(p: str) -> elf.ElfInfo:
        calls.append(p)
        return elf.inspect(p)

    first = cache.inspect(path, str(tmp_path), compute)
    assert len(cache_files(tmp_path)) == 1
    second = cache.inspect(path, str(tmp_path), compute)
    assert calls == [path]  # the second answer came from the file
    assert second == first == elf.inspect(path)


def test_hit_on_another_path_reports_that_path(built: Built, tmp_path: Path) -> None:
    copy = tmp_path / "bin" / "hello-copy"
    copy.parent.mkdir()
    shutil.copy(built["hello"], copy)
    cache.inspect(str(built["hello"]), str(tmp_path / "c"))
    info = cache.inspect(str(copy), str(tmp_path / "c"))
    assert len(cache_files(tmp_path / "c")) == 1  # same build-id and size: one entry
    assert info.path == str(copy)
    assert info == elf.inspect(str(copy))


def test_stripped_copy_with_same_build_id_is_not_confused(built: Built, tmp_path: Path) -> None:
    full, stripped = str(built["hello"]), str(built["hello-stripped"])
    assert open_elf(full).build_id == open_elf(stripped).build_id
    cache.inspect(full, str(tmp_path))
    assert cache.inspect(stripped, str(tmp_path)).symbols == ()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b"",
        lambda b: b"not a cache file at all",
        lambda b: b[:-10] + bytes(10),  # payload changed, CRC stale
        lambda b: b[:8] + b"\xff" * (len(b) - 8),
    ],
)
def test_corrupt_file_is_ignored_and_rewritten(built: Built, tmp_path: Path, damage: object) -> None:
    path = str(built["hello-dyn"])
    want = cache.inspect(path, str(tmp_path))
    (file,) = cache_files(tmp_path)
    file.write_bytes(damage(file.read_bytes()))  # type: ignore[operator]
    assert cache.inspect(path, str(tmp_path)) == want
    assert cache.load(str(file), cache.cache_key(path, {}), path) == want  # rebuilt


def test_options_are_part_of_the_key(built: Built, tmp_path: Path) -> None:
    seen: list[dict[str, object]] = []

    def compute(path: str, **options: object) -> elf.ElfInfo:
        seen.append(options)
        return elf.inspect(path)

    path = str(built["hello"])
    for root in ("/a", "/b", "/a"):
        cache.inspect(path, str(tmp_path), compute, root=root)
    assert seen == [{"root": "/a"}, {"root": "/b"}]
    assert len(cache_files(tmp_path)) == 2


def test_no_directory_means_no_cache(built: Built, tmp_path: Path) -> None:
    assert cache.inspect(str(built["hello"]), None) == elf.inspect(str(built["hello"]))


def test_unwritable_directory_still_answers(built: Built, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would go")
    info = cache.inspect(str(built["hello"]), str(blocker / "ctrace"))
    assert info == elf.inspect(str(built["hello"]))


def test_old_entries_are_pruned(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "KEEP", 2)
    for name in ("hello", "hello-dyn", "acme"):
        cache.inspect(str(built[name]), str(tmp_path))
    assert len(cache_files(tmp_path)) == 2


def test_cli_uses_xdg_cache_home_and_no_cache_bypasses_it(built: Built, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    path = str(built["acme"])
    assert ctrace("--no-cache", "symbols", path, "-o", "json", env=env).code == 0
    assert ctrace("symbols", path, "-o", "json", env={**env, "CTRACE_NO_CACHE": "1"}).code == 0
    assert cache_files(tmp_path / "ctrace") == []
    cold = ctrace("symbols", path, "-o", "json", env=env)
    # the rendered JSON rows, and the ElfInfo where Python made them (the C listing makes no ElfInfo)
    rows_only = speedups.module is not None
    assert sorted(f.suffix for f in cache_files(tmp_path / "ctrace")) == ([".json"] if rows_only else ["", ".json"])
    warm = ctrace("symbols", path, "-o", "json", env=env)
    assert cold.code == warm.code == 0
    assert warm.out == cold.out


@pytest.mark.parametrize("name", ["acme", "cilium-agent-stripped", "hello", "hello-dyn"])
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_listing_from_the_cache_is_what_a_fresh_parse_prints(built: Built, tmp_path: Path, name: str, fmt: str) -> None:
    """The rendered rows read back (a hit, through a copy at another path) print what --no-cache prints."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    copy = tmp_path / "elsewhere" / name
    copy.parent.mkdir()
    shutil.copy(built[name], copy)
    first = ctrace("symbols", str(built[name]), "-o", fmt, env=env)
    assert first.code == 0
    assert any(f.suffix == f".{fmt}" for f in cache_files(tmp_path / "ctrace"))
    for path in (str(built[name]), str(copy)):
        fresh = ctrace("--no-cache", "symbols", path, "-o", fmt, env=env)
        cached = ctrace("symbols", path, "-o", fmt, env=env)
        assert fresh.code == cached.code == 0
        assert cached.out == fresh.out
    assert str(copy) in cached.out and str(built[name]) not in cached.out


def test_listing_hit_reads_no_symbols(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(built["acme"])
    made = listing.cached(path, str(tmp_path), "json", lambda info: f"{len(info.symbols)} rows")

    def fail(*args: object, **kwargs: object) -> elf.ElfInfo:
        raise AssertionError("a listing hit must not load or parse symbols")

    monkeypatch.setattr(cache, "inspect", fail)
    assert listing.cached(path, str(tmp_path), "json", lambda info: "never called") == made
    assert made.rows == f"{made.functions} rows".encode() and made.functions > 0


def test_damaged_listing_is_rebuilt(built: Built, tmp_path: Path) -> None:
    path = str(built["hello-dyn"])
    want = listing.cached(path, str(tmp_path), "text", lambda info: "rows\n")
    (rows,) = [f for f in cache_files(tmp_path) if f.suffix == ".text"]
    rows.write_bytes(rows.read_bytes()[:-3])
    assert listing.cached(path, str(tmp_path), "text", lambda info: "rows\n") == want


def test_prune_keeps_the_newest_within_the_byte_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_BYTES", 2500)
    for i in range(4):
        f = tmp_path / f"entry{i}"
        f.write_bytes(bytes(1000))
        os.utime(f, ns=(i * 10**9, i * 10**9))
    cache._prune(str(tmp_path))
    assert [f.name for f in cache_files(tmp_path)] == ["entry2", "entry3"]


def test_a_debug_file_installed_later_is_a_miss(built: Built, tmp_path: Path) -> None:
    """Installing a debug package (a build-id file) after the first look must not serve the old names."""
    path = str(built["hello"])
    build_id = open_elf(path).build_id
    assert build_id
    root = tmp_path / "root"
    calls: list[str] = []

    def compute(p: str, **options: object) -> elf.ElfInfo:
        calls.append(p)
        return elf.inspect(p, str(root))

    cache.inspect(path, str(tmp_path / "c"), compute, root=str(root))
    cache.inspect(path, str(tmp_path / "c"), compute, root=str(root))
    assert len(calls) == 1
    debug = root / f"usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug"
    debug.parent.mkdir(parents=True)
    shutil.copy(path, debug)
    info = cache.inspect(path, str(tmp_path / "c"), compute, root=str(root))
    assert len(calls) == 2
    assert info.debug_files == (("build-id", str(debug)),)


@pytest.mark.parametrize("name", ["hello-dyn", "acme", "cilium-agent-stripped"])
def test_packed_columns_are_the_symbols(built: Built, name: str) -> None:
    symbols = elf.inspect(str(built[name])).symbols
    cols = columns.unpack(columns.pack(symbols))
    assert cols == symbols and list(cols) == list(symbols) and cols.names == [s.name for s in symbols]
    assert cols[3] == symbols[3] and cols[-1] == symbols[-1] and cols[2:5] == tuple(symbols[2:5])
    assert columns.unpack(cols.pack()) == symbols  # a hit stored again


def test_sizes_that_do_not_fit_64_bits_are_kept() -> None:
    odd = (Symbol("a", 1, -8, "pclntab"), Symbol("b", 1 << 64, 2, "symtab"))
    assert columns.unpack(columns.pack(odd)) == odd


@pytest.mark.parametrize("flags", [os.O_WRONLY, os.O_WRONLY | os.O_APPEND])  # O_APPEND: sendfile refuses it
def test_cached_rows_are_copied_to_a_file_descriptor(built: Built, tmp_path: Path, flags: int) -> None:
    path = str(built["acme"])
    made = listing.cached(path, str(tmp_path), "text", lambda info: f"{len(info.symbols)} rows\n" * 5000)
    hit = listing.cached(path, str(tmp_path), "text", lambda info: "never called", lazy=True)
    assert isinstance(hit.rows, listing.Rows) and hit[:-1] == made[:-1]
    out = tmp_path / "out"
    out.write_bytes(b"head\n")
    fd = os.open(out, flags)
    try:
        os.lseek(fd, 0, os.SEEK_END)
        hit.rows.copy_to(fd)
    finally:
        os.close(fd)
    assert out.read_bytes() == b"head\n" + made.rows
