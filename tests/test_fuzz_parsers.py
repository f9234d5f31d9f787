"""Short fuzz runs of every parser of state files and tool output (issue 22); hack/fuzz.py --parser does long ones.

Seeds are real: containerd's meta.db and the OCI spec it writes (a containerd
started here), podman 4.3's containers.json, ``perf script`` of a uprobe with
DWARF stacks (perf 6.1) and bpftrace's map dump of ctrace's stacks program on
0.17, 0.23 and 0.27 (tests/fixtures/captures/), plus bbolt files in bbolt's
layout (tests/boltgen.py) and CRI-O's annotations as tests/test_runtimes_parse.py
writes them. Each input must parse in under a second to a result, to nothing or
to the parser's clean error (tests/parser_fuzz.py).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctrace import perf, runner, stacks
from ctrace.cgroups import Placement
from ctrace.errors import CtraceError
from ctrace.resolvers import bolt, containerd, crio, oci, podman, storage
from ctrace.resolvers.base import Context
from ctrace.symbolize import Maps
from tests import boltgen, parser_fuzz
from tests.conftest import need
from tests.parser_fuzz import Target
from tests.test_runtimes_parse import UID, crio_spec

CAPTURES = Path(__file__).parent / "fixtures" / "captures"
SEED = 20261206
CRI = "io.kubernetes.cri."
CRIO = "io.kubernetes.cri-o."


def assert_clean(report: parser_fuzz.Report, cases: int) -> None:
    assert report.crashes == []
    assert report.cases == cases
    # The mutations must reach both outcomes, or they test nothing.
    assert report.parsed > cases // 20 and report.clean_errors > cases // 20, report


# -- bbolt -------------------------------------------------------------------------------------------


def read_metadata(data: bytes) -> None:
    """What containerd.py reads: every namespace's containers, each one's keys and labels."""
    db = bolt.Bolt(data)
    for ns in list(db.get(b"v1"))[:20]:
        for ident in list(db.get(b"v1", ns, b"containers"))[:10]:
            db.get(b"v1", ns, b"containers", ident)
            db.get(b"v1", ns, b"containers", ident, b"labels")


BOLT = Target("bbolt", read_metadata, (bolt.BadBolt,), parser_fuzz.BOLT_MUTATIONS)


@pytest.fixture(scope="module")
def real_containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[bytes, list[bytes]]]:
    """(meta.db, the OCI specs in it) of a containerd started here: a CRI-annotated container and
    sandbox, one with 300 labels (its bucket spans branch pages) and a spec past a page (overflow)."""
    for tool in ("containerd", "ctr"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (hack/setup.sh installs it)")
    need(os.geteuid() == 0, "containerd needs root")
    tmp = tmp_path_factory.mktemp("containerd")
    (tmp / "rootfs").mkdir()
    sock = str(tmp / "c.sock")
    (tmp / "config.toml").write_text(
        f'version = 2\nroot = "{tmp / "root"}"\nstate = "{tmp / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
    )
    log = open(tmp / "containerd.log", "wb")
    daemon = subprocess.Popen(["containerd", "--config", str(tmp / "config.toml")], stdout=log, stderr=log)
    try:
        ctr = ["ctr", "-a", sock, "-n", "k8s.io"]
        for _ in range(100):
            if subprocess.run([*ctr, "version"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        for ident, kind in (("sandbox0", "sandbox"), ("app0", "container")):
            notes = {"container-type": kind, "container-name": "POD" if kind == "sandbox" else "api",
                     "sandbox-id": "0" * 64, "sandbox-name": "web-7f", "sandbox-namespace": "shop",
                     "sandbox-uid": UID, "image-name": "docker.io/library/hello:1"}  # fmt: skip
            flags = [f"--annotation={CRI}{k}={v}" for k, v in notes.items()]
            flags += ["--label=app=web", "--label=io.kubernetes.pod.name=web-7f"]
            subprocess.run([*ctr, "c", "create", *flags, "--rootfs", str(tmp / "rootfs"), ident, "/hello"], check=True)
        many = [f"--label=io.example.label-{i}=value-{i}" for i in range(300)]
        many += [f"--annotation=io.example.note-{i}={'x' * 20}" for i in range(150)]
        subprocess.run([*ctr, "c", "create", *many, "--rootfs", str(tmp / "rootfs"), "many", "/hello"], check=True)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
    data = (tmp / "root" / "io.containerd.metadata.v1.bolt" / "meta.db").read_bytes()
    db = bolt.Bolt(data)
    specs = []
    for ident in (b"sandbox0", b"app0", b"many"):
        raw = db.get(b"v1", b"k8s.io", b"containers", ident)[b"spec"] or b""
        specs.append(raw[raw.index(b'{"ociVersion"') :])  # a protobuf Any: type URL, then the spec's JSON
    yield data, specs


def test_bbolt_reads_a_real_meta_db(real_containerd: tuple[bytes, list[bytes]]) -> None:
    db = bolt.Bolt(real_containerd[0])
    assert set(db.get(b"v1", b"k8s.io", b"containers")) == {b"sandbox0", b"app0", b"many"}
    labels = db.get(b"v1", b"k8s.io", b"containers", b"many", b"labels")
    assert len(labels) == 300 and labels[b"io.example.label-299"] == b"value-299"


def test_bbolt_mutations_of_a_real_meta_db(real_containerd: tuple[bytes, list[bytes]]) -> None:
    report = parser_fuzz.run(BOLT, [real_containerd[0]], cases=1500, seed=SEED)
    assert_clean(report, 1500)


def test_bbolt_mutations_of_written_files() -> None:
    seeds = [boltgen.build(boltgen.containerd_like(n), per_leaf=k) for n, k in ((40, 8), (6, 3), (120, 32))]
    report = parser_fuzz.run(BOLT, seeds, cases=1500, seed=SEED)
    assert_clean(report, 1500)


@pytest.mark.parametrize("depth", [14, 18, 30, 64])
def test_bbolt_dag_of_shared_branch_pages(depth: int) -> None:
    data = boltgen.dag(depth)
    assert len(data) < 300_000
    start = time.perf_counter()
    with pytest.raises(bolt.BadBolt, match="reached twice"):
        bolt.Bolt(data).get(b"v1")
    assert time.perf_counter() - start < 1.0


def test_bbolt_self_referencing_page(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(bolt.BadBolt, match="reached twice"):
        bolt.Bolt(boltgen.self_referencing()).get(b"v1", b"k8s.io")
    assert time.perf_counter() - start < 1.0
    # What containerd.py sees: the database opens, its pages answer nothing, no traceback.
    (tmp_path / "meta.db").write_bytes(boltgen.dag(64))
    db = bolt.open_bolt(str(tmp_path / "meta.db"))
    assert db is not None
    with pytest.raises(ValueError):
        db.get(b"v1", b"k8s.io", b"containers")


def test_boltgen_writes_what_the_reader_reads() -> None:
    tree = boltgen.containerd_like(40)
    db = bolt.Bolt(boltgen.build(tree, per_leaf=4))
    containers = tree[b"v1"][b"k8s.io"][b"containers"]  # type: ignore[index]
    assert set(db.get(b"v1", b"k8s.io", b"containers")) == set(containers)  # type: ignore[arg-type]
    ident = b"%064x" % 8
    assert db.get(b"v1", b"k8s.io", b"containers", ident, b"labels") == {
        b"app": b"web",
        b"io.kubernetes.pod.name": b"web-8",
    }
    assert len(db.get(b"v1", b"k8s.io", b"containers", ident)[b"spec"] or b"") > 4096  # an overflow page


# -- OCI bundles, containers.json, CRI-O -------------------------------------------------------------


def bundle_target(tmp: Path, runtime: str) -> Target:
    """containerd.describe or crio.describe of a bundle whose config.json is the input."""
    bundle = tmp / runtime / "bundle"
    bundle.mkdir(parents=True)
    ctx = Context(proc_root=str(tmp / "proc"))
    name = f"k8s_api_web-7f_shop_{UID}_0"
    where = Placement("a" * 64, runtime, namespace="k8s.io", bundle=str(bundle), name=name)
    describe = containerd.describe if runtime == "containerd" else crio.describe

    def parse(data: bytes) -> None:
        (bundle / "config.json").write_bytes(data)
        describe(where, ctx)

    return Target(f"{runtime} config.json", parse, (CtraceError,), parser_fuzz.JSON_MUTATIONS)


def test_containerd_bundle_mutations(real_containerd: tuple[bytes, list[bytes]], tmp_path: Path) -> None:
    target = bundle_target(tmp_path, "containerd")
    target.parse(real_containerd[1][1])  # the seed itself is read
    report = parser_fuzz.run(target, real_containerd[1], cases=600, seed=SEED)
    assert_clean(report, 600)


def test_crio_state_mutations(real_containerd: tuple[bytes, list[bytes]], tmp_path: Path) -> None:
    seeds = []
    for kind, name in (("container", "agent"), ("sandbox", "POD")):
        written = crio_spec(kind, name, "/var/lib/containers/storage/overlay/x/merged")
        real = json.loads(real_containerd[1][1])  # containerd's spec, with CRI-O's annotations
        seeds += [json.dumps(written).encode(), json.dumps({**real, "annotations": written["annotations"]}).encode()]
    report = parser_fuzz.run(bundle_target(tmp_path, "cri-o"), seeds, cases=600, seed=SEED)
    assert_clean(report, 600)


def test_containers_json_mutations(tmp_path: Path) -> None:
    raw = (CAPTURES / "podman-4.3-containers.json").read_bytes()
    ident = json.loads(raw)[0]["id"]
    store = tmp_path / "overlay-containers"
    userdata = store / ident / "userdata"
    userdata.mkdir(parents=True)
    (userdata / "config.json").write_text(json.dumps(crio_spec("container", "web", "/nonexistent")))
    where = Placement(ident, "podman", bundle=str(userdata), name="web")
    ctx = Context(proc_root=str(tmp_path / "proc"))

    def parse(data: bytes) -> None:
        (store / "containers.json").write_bytes(data)
        podman.describe(where, ctx)

    target = Target("containers.json", parse, (CtraceError,), parser_fuzz.JSON_MUTATIONS)
    parse(raw)
    hit = podman.describe(where, ctx)
    assert hit is not None and hit.container.name == "web" and hit.container.image == "localhost/ctrace-capture/hello:1"
    report = parser_fuzz.run(target, [raw], cases=600, seed=SEED)
    assert_clean(report, 600)


# -- perf script, bpftrace's map dump -------------------------------------------------------------


def read_perf(data: bytes) -> None:
    samples = perf.parse(data.decode("utf-8", "surrogateescape"))  # perf.run reads it so
    perf.counts(samples)
    perf.render(samples, "f in pid 1", io.StringIO())


def test_perf_script_mutations() -> None:
    raw = (CAPTURES / "perf-6.1-script.txt").read_bytes()
    assert [len(s.frames) for s in perf.parse(raw.decode())] == [7, 7, 7]
    report = parser_fuzz.run(Target("perf script", read_perf, (), parser_fuzz.TEXT_MUTATIONS), [raw], 1000, SEED)
    assert report.crashes == [] and report.cases == 1000


def test_bpftrace_map_dump_mutations(tmp_path: Path) -> None:
    seeds = [p.read_bytes() for p in sorted(CAPTURES.glob("bpftrace-*-stacks.txt"))]
    assert len(seeds) == 3
    for raw in seeds:
        (found,) = runner.parse_stacks(raw.decode().splitlines())
        assert found.probe == "func_c" and len(found.addresses) == 5 and found.calls > 10
    (tmp_path / "proc").mkdir()
    naming = runner.Naming({}, {}, "fuzz")

    def parse(data: bytes) -> None:
        maps = Maps(str(tmp_path / "proc"))  # no process: every frame unnamed, as after an exit
        named = stacks.named(runner.parse_stacks(data.decode("utf-8", "replace").splitlines()), maps, naming)
        stacks.report(named, naming, maps, io.StringIO())

    report = parser_fuzz.run(Target("map dump", parse, (), parser_fuzz.TEXT_MUTATIONS), seeds, 1000, SEED)
    assert report.crashes == [] and report.cases == 1000


def test_inputs_that_broke_the_parsers() -> None:
    """What the fuzz runs found before issue 22's fixes, each a traceback then."""
    long = "9" * 5000  # int() refuses over 4300 digits (Python 3.11)
    assert perf.parse(f"x {long}/1\n\t1 f+0x1 (/a)\n") == []
    assert perf.parse("x \u00b2/1\n") == []  # '\u00b2'.isdigit(), but not int()
    assert runner.parse_stacks([f"@stacks[f, {long}, 0, ", "\t10 x", "]: 1"]) == []
    assert runner.parse_stacks(["@stacks[f, 1, 0, ", "\t10 x", f"]: {long}"]) == []
    with pytest.raises(CtraceError, match="nested too deeply"):
        oci.parse_spec(b'{"annotations": ' + b"[" * 100_000, "/run/x")
    spec = oci.parse_spec(json.dumps({"annotations": {CRIO + "Labels": "[" * 100_000}}).encode(), "/run/x")
    assert oci.pod(spec.annotations) is None
    with pytest.raises(CtraceError, match="nested too deeply"):
        storage.parse_record(b"[" * 100_000, "a", "/store")
    entry = {"id": "a", "names": {"web": 1}, "metadata": json.dumps({"image-name": ["x"]})}
    assert storage.parse_record(json.dumps([entry]).encode(), "a", "/store") == storage.Stored((), "")


def test_map_dump_that_is_not_utf8_is_read() -> None:
    """bpftrace prints a symbol's bytes as they are; a name that is not UTF-8 once ended the reader thread."""
    dump = r"\377 shown\n@stacks[f, 1, 0, \n\t10 \377\377 (/x)\n]: 2\n"
    proc = runner._start(["printf", dump], stdout=subprocess.PIPE)
    out = io.StringIO()
    watch = runner.Watch(proc, out)
    assert proc.wait(timeout=10) == 0
    assert runner.parse_stacks(watch.join()) == [runner.Stack("f", 1, (0x10,), 2)]
    assert out.getvalue() == "\ufffd shown\n"
