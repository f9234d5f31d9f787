"""Mutations of real state files and tool output, and the property every parser of issue 22 must keep.

Property: each parser, run on any input, returns (a result or none) or raises its
clean error (a CtraceError; bolt.BadBolt is one, which containerd.py turns into
"no metadata"); never another exception, never longer than MAX_SECONDS. The parsers
read files a container's runtime or a traced tool wrote, as root: bbolt pages,
containers/storage's containers.json, OCI bundles' config.json (containerd's and
CRI-O's annotations), ``perf script`` text and bpftrace's map dump.
Used by tests/test_fuzz_parsers.py (short runs in CI) and hack/fuzz.py (--parser, the long ones);
the ELF reader's own is tests/fuzzing.py.
"""

from __future__ import annotations

import io
import json
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.fuzzing import EXTREMES, Report, flip_bytes, truncate
from tests.test_runtimes_parse import UID, crio_spec

MAX_SECONDS = 1.0  # per input (issue 22: "no hang over 1 s"); real inputs parse in milliseconds
MAX_GROWTH = 1 << 20  # bytes one mutation may add: time linear in a 400 MB input is no hang
Mutation = Callable[[bytearray, random.Random], None]


@dataclass(frozen=True)
class Target:
    name: str
    parse: Callable[[bytes], object]
    clean: tuple[type[BaseException], ...]  # the errors that are the parser's clear answer
    mutations: Sequence[Mutation]


def check(target: Target, data: bytes, report: Report) -> None:
    start = time.perf_counter()
    try:
        target.parse(data)
        report.parsed += 1
    except target.clean:
        report.clean_errors += 1
    except Exception as err:  # noqa: BLE001 - the property under test
        report.crashes.append(f"{target.name}: {type(err).__name__}: {err}"[:300])
    elapsed = time.perf_counter() - start
    report.slowest = max(report.slowest, elapsed)
    report.cases += 1
    if elapsed > MAX_SECONDS:
        report.crashes.append(f"{target.name}: slow: {elapsed:.2f}s")


def run(target: Target, seeds: Sequence[bytes], cases: int, seed: int) -> Report:
    rnd = random.Random(seed)
    report = Report()
    for i in range(cases):
        data = bytearray(seeds[i % len(seeds)])
        for _ in range(rnd.randint(1, 3)):
            if data:
                rnd.choice(target.mutations)(data, rnd)
        check(target, bytes(data), report)
        if len(report.crashes) > 20:
            break
    return report


# -- bytes -----------------------------------------------------------------------------------------


def duplicate(data: bytearray, rnd: random.Random) -> None:
    """A stretch copied over another place (a page over a page, a line into another)."""
    start = rnd.randrange(len(data))
    chunk = data[start : start + rnd.randint(1, 8192)]
    at = rnd.randrange(len(data))
    data[at : at + len(chunk)] = chunk


def delete(data: bytearray, rnd: random.Random) -> None:
    start = rnd.randrange(len(data))
    del data[start : start + rnd.randint(1, 256)]


def aligned_extreme(data: bytearray, rnd: random.Random) -> None:
    """A 2-, 4- or 8-byte field at an aligned place set to an extreme."""
    size = rnd.choice([2, 4, 8])
    if len(data) < size:
        return
    at = rnd.randrange(len(data) // size) * size
    data[at : at + size] = (rnd.choice(EXTREMES) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


# -- bbolt ---------------------------------------------------------------------------------------


def _bolt_layout(data: bytearray) -> tuple[int, int]:
    """(page size, pages) as meta page 0 says, else 4096."""
    size = struct.unpack_from("<I", data, 24)[0] if len(data) >= 28 else 4096
    size = size if 512 <= size <= 1 << 16 else 4096
    return size, max(len(data) // size, 1)


def repoint(data: bytearray, rnd: random.Random) -> None:
    """A branch element's child set to another page (itself, an ancestor, a sibling: DAGs and cycles),
    or a leaf element's bucket root moved the same way."""
    size, pages = _bolt_layout(data)
    page = rnd.randrange(2, max(pages, 3))
    base = page * size
    if base + 32 > len(data):
        return
    flags, count = struct.unpack_from("<HH", data, base + 8)
    if not count:
        return
    elem = base + 16 + rnd.randrange(count) * 16
    if flags & 0x01 and elem + 16 <= len(data):
        struct.pack_into("<Q", data, elem + 8, rnd.randrange(pages + 2))
    elif flags & 0x02 and elem + 16 <= len(data):
        pos, ksize = struct.unpack_from("<II", data, elem + 4)
        value = elem + pos + ksize
        if value + 8 <= len(data):
            struct.pack_into("<Q", data, value, rnd.randrange(pages + 2))


def page_header(data: bytearray, rnd: random.Random) -> None:
    """A page's flags, count or overflow set to an extreme."""
    size, pages = _bolt_layout(data)
    base = rnd.randrange(pages) * size
    off, code = rnd.choice([(8, "<H"), (10, "<H"), (12, "<I")])
    if base + off + 4 <= len(data):
        struct.pack_into(code, data, base + off, rnd.choice(EXTREMES) & (0xFFFF if code == "<H" else 0xFFFFFFFF))


def element(data: bytearray, rnd: random.Random) -> None:
    """An element's pos, ksize or vsize set to an extreme."""
    size, pages = _bolt_layout(data)
    elem = rnd.randrange(pages) * size + 16 + rnd.randrange(8) * 16
    if elem + 16 <= len(data):
        struct.pack_into("<I", data, elem + rnd.choice([0, 4, 8, 12]), rnd.choice(EXTREMES) & 0xFFFFFFFF)


def meta_field(data: bytearray, rnd: random.Random) -> None:
    """The root, high-water mark or page size of a meta page changed, its checksum made right again
    (a checksum alone would stop every such file at the meta page)."""
    from ctrace.resolvers.bolt import checksum

    size, _ = _bolt_layout(data)
    base = rnd.choice([0, size]) + 16
    if base + 64 > len(data):
        return
    off, code = rnd.choice([(8, "<I"), (16, "<Q"), (40, "<Q")])
    value = rnd.choice([*EXTREMES, rnd.randrange(len(data) // size + 2)])
    struct.pack_into(code, data, base + off, value & (0xFFFFFFFF if code == "<I" else 0xFFFFFFFFFFFFFFFF))
    struct.pack_into("<Q", data, base + 56, checksum(bytes(data[base : base + 56])))


BOLT_MUTATIONS: list[Mutation] = [
    flip_bytes,
    truncate,
    duplicate,
    aligned_extreme,
    repoint,
    repoint,
    page_header,
    element,
    meta_field,
]


# -- text: JSON and line-oriented output ----------------------------------------------------------

TOKENS = [
    *(b"[" * 100_000, b'{"a":' * 50_000, b"9" * 5000, b"A" * 100_000, b"18446744073709551616", b"1e999999"),
    b"\xc2\xb2",  # superscript two: str.isdigit() says yes, int() says no
    b"\xd9\xa3",  # Arabic-Indic three
    *(b"NaN", b"-", b'"\\ud800"', b"null", b"[]", b"{}", b"\x00", b"\xff\xfe", b"\t", b"\n"),
    *(b" (", b")", b"+0x", b"]: ", b"@stacks[", b", "),
]


def token(data: bytearray, rnd: random.Random) -> None:
    """A hostile token inserted, or written over a stretch."""
    at = rnd.randrange(len(data) + 1)
    tok = rnd.choice(TOKENS)
    data[at : at + (rnd.randrange(len(tok)) if rnd.random() < 0.5 else 0)] = tok


def lines(data: bytearray, rnd: random.Random) -> None:
    """Lines duplicated, dropped or swapped (a map entry without its end, a sample without a head)."""
    rows = bytes(data).split(b"\n")
    i, j = rnd.randrange(len(rows)), rnd.randrange(len(rows))
    choice = rnd.randrange(4)
    if choice == 0:
        rows[i:i] = [rows[j]] * min(rnd.randint(1, 2000), 1 + MAX_GROWTH // (len(rows[j]) + 1))
    elif choice == 1:
        del rows[i]
    elif choice == 2:
        rows[i], rows[j] = rows[j], rows[i]
    else:
        rows[i] = rows[i].replace(b" ", b"\t") if rnd.random() < 0.5 else rows[i].replace(b"\t", b"")
    data[:] = b"\n".join(rows)


def number(data: bytearray, rnd: random.Random) -> None:
    """A run of digits made huge, negative, empty or another script's."""
    starts = [i for i in range(len(data)) if 0x30 <= data[i] <= 0x39 and (i == 0 or not 0x30 <= data[i - 1] <= 0x39)]
    if not starts:
        return token(data, rnd)
    at = rnd.choice(starts)
    end = at
    while end < len(data) and 0x30 <= data[end] <= 0x39:
        end += 1
    data[at:end] = rnd.choice(
        [b"9" * 5000, b"9" * 5000, b"\xc2\xb2", b"\xd9\xa3", b"9" * 21, b"-1", b"", b"0x10", b"1_0"]
    )


def _json_swap(value: object, rnd: random.Random, mark: str | None = None) -> object:
    """The value with one node replaced by another type (or by ``mark``), or a string that holds JSON
    mutated inside."""
    if isinstance(value, dict) and value and rnd.random() < 0.8:
        key = rnd.choice(list(value))
        return {**value, key: _json_swap(value[key], rnd, mark)}
    if isinstance(value, list) and value and rnd.random() < 0.8:
        i = rnd.randrange(len(value))
        return [*value[:i], _json_swap(value[i], rnd, mark), *value[i + 1 :]]
    if mark is not None:
        return mark
    if isinstance(value, str) and value.startswith(("{", "[")) and rnd.random() < 0.7:
        inner = bytearray(value.encode())  # CRI-O's Labels, containers/storage's metadata: JSON in a string
        rnd.choice([token, flip_bytes, json_swap, truncate])(inner, rnd)
        return inner.decode("utf-8", "replace")
    return rnd.choice([None, True, 0, -1, 2**70, 1.5, "", "x" * 10_000, [], {}, [value], {"k": value}, "²"])


def json_swap(data: bytearray, rnd: random.Random) -> None:
    try:
        value = json.loads(bytes(data))
    except (ValueError, RecursionError):
        return flip_bytes(data, rnd)
    data[:] = json.dumps(_json_swap(value, rnd)).encode()


def nest(data: bytearray, rnd: random.Random) -> None:
    """A value replaced by arrays nested deeper than the decoder recurses (a RecursionError, not a ValueError)."""
    try:
        value = json.loads(bytes(data))
    except (ValueError, RecursionError):
        return token(data, rnd)
    mark = "\x00nest\x00"
    text = json.dumps(_json_swap(value, random.Random(rnd.random()), mark=mark))
    depth = rnd.choice([100, 100_000])
    data[:] = text.replace(json.dumps(mark), "[" * depth + "]" * depth, 1).encode()


JSON_MUTATIONS: list[Mutation] = [json_swap, json_swap, json_swap, nest, token, flip_bytes, truncate, delete, number]
TEXT_MUTATIONS: list[Mutation] = [lines, lines, token, number, flip_bytes, truncate, delete, duplicate]


# -- the parsers, as ctrace calls them ------------------------------------------------------------

CAPTURES = Path(__file__).parent / "fixtures" / "captures"


def read_metadata(data: bytes) -> None:
    """What containerd.py reads of meta.db: every namespace's containers, each one's keys and labels."""
    from ctrace.resolvers import bolt

    db = bolt.Bolt(data)
    for ns in list(db.get(b"v1"))[:20]:
        for ident in list(db.get(b"v1", ns, b"containers"))[:10]:
            db.get(b"v1", ns, b"containers", ident)
            db.get(b"v1", ns, b"containers", ident, b"labels")


def _bundle(tmp: Path, runtime: str) -> Callable[[bytes], object]:
    """containerd.describe or crio.describe of a bundle whose config.json is the input."""
    from ctrace.proc.cgroups import Placement
    from ctrace.resolvers import containerd, crio
    from ctrace.resolvers.base import Context

    bundle = tmp / runtime / "bundle"
    bundle.mkdir(parents=True)
    ctx = Context(proc_root=str(tmp / "proc"))
    where = Placement("a" * 64, runtime, namespace="k8s.io", bundle=str(bundle), name=f"k8s_api_web-7f_shop_{UID}_0")
    describe = containerd.describe if runtime == "containerd" else crio.describe

    def parse(data: bytes) -> object:
        (bundle / "config.json").write_bytes(data)
        return describe(where, ctx)

    return parse


def _containers_json(tmp: Path) -> Callable[[bytes], object]:
    """podman.describe of the first container of the captured containers.json, whose file is the input."""
    from ctrace.proc.cgroups import Placement
    from ctrace.resolvers import podman
    from ctrace.resolvers.base import Context

    ident = json.loads((CAPTURES / "podman-4.3-containers.json").read_bytes())[0]["id"]
    store = tmp / "overlay-containers"
    userdata = store / ident / "userdata"
    userdata.mkdir(parents=True)
    (userdata / "config.json").write_bytes((CAPTURES / "containerd-1.6-config.json").read_bytes())
    where = Placement(ident, "podman", bundle=str(userdata), name="web")
    ctx = Context(proc_root=str(tmp / "proc"))

    def parse(data: bytes) -> object:
        (store / "containers.json").write_bytes(data)
        return podman.describe(where, ctx)

    return parse


def read_perf(data: bytes) -> object:
    from ctrace.run import perf

    samples = perf.parse(data.decode("utf-8", "surrogateescape"))  # perf.run reads it so
    perf.counts(samples)
    perf.render(samples, "f in pid 1", io.StringIO())
    return samples


def _map_dump(tmp: Path) -> Callable[[bytes], object]:
    from ctrace.run import stacks
    from ctrace.run.symbolize import Maps

    (tmp / "proc").mkdir(exist_ok=True)
    naming = stacks.Naming({}, {}, "fuzz")

    def parse(data: bytes) -> object:
        maps = Maps(str(tmp / "proc"))  # no process: every frame unnamed, as after an exit
        found = stacks.parse_stacks(data.decode("utf-8", "replace").splitlines())  # runner._start reads it so
        named = stacks.named(found, maps, naming)
        stacks.report(named, naming, maps, io.StringIO())
        return named

    return parse


def targets(tmp: Path) -> dict[str, Target]:
    """Every parser by name; ``tmp`` holds the files the runtimes' readers open."""
    from ctrace.errors import CtraceError
    from ctrace.resolvers import bolt

    return {
        "bbolt": Target("bbolt", read_metadata, (bolt.BadBolt,), BOLT_MUTATIONS),  # a CtraceError
        "containerd": Target("containerd config.json", _bundle(tmp, "containerd"), (CtraceError,), JSON_MUTATIONS),
        "cri-o": Target("cri-o config.json", _bundle(tmp, "cri-o"), (CtraceError,), JSON_MUTATIONS),
        "containers.json": Target("containers.json", _containers_json(tmp), (CtraceError,), JSON_MUTATIONS),
        "perf": Target("perf script", read_perf, (), TEXT_MUTATIONS),
        "map-dump": Target("map dump", _map_dump(tmp), (), TEXT_MUTATIONS),
    }


def crio_seeds() -> list[bytes]:
    """CRI-O's config.json as tests/test_runtimes_parse.py writes it, alone and in containerd's real spec."""
    real = json.loads((CAPTURES / "containerd-1.6-config.json").read_bytes())
    out = []
    for kind, name in (("container", "agent"), ("sandbox", "POD")):
        written = crio_spec(kind, name, "/var/lib/containers/storage/overlay/x/merged")
        out += [json.dumps(written).encode(), json.dumps({**real, "annotations": written["annotations"]}).encode()]
    return out


def seeds(name: str) -> list[bytes]:
    """The captured (and, for bbolt, written) inputs each parser's mutations start from."""
    from tests import boltgen

    if name == "bbolt":
        return [boltgen.build(boltgen.containerd_like(n), per_leaf=k) for n, k in ((40, 8), (6, 3), (120, 32))]
    if name == "cri-o":
        return crio_seeds()
    files = {
        "containerd": ["containerd-1.6-config.json"],
        "containers.json": ["podman-4.3-containers.json"],
        "perf": ["perf-6.1-script.txt"],
        "map-dump": sorted(p.name for p in CAPTURES.glob("bpftrace-*-stacks.txt")),
    }[name]
    return [(CAPTURES / f).read_bytes() for f in files]
