"""Short fuzz runs of every parser of state files and tool output (issue 22); hack/fuzz.py --parser does long ones.

Seeds are real: containerd's meta.db and the OCI specs it stores (a containerd
started here), and captures in tests/fixtures/captures/ (containerd's spec with
CRI annotations, podman 4.3's containers.json, ``perf script`` of a uprobe with
DWARF stacks, bpftrace's map dump of ctrace's stacks program on 0.17, 0.23 and
0.27), plus bbolt files in bbolt's layout (tests/boltgen.py) and CRI-O's
annotations as tests/test_runtimes_parse.py writes them. Each input must parse in
under a second to a result, to nothing or to the parser's clean error
(tests/parser_fuzz.py); each run's seed is fixed.
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

from ctrace.errors import CtraceError
from ctrace.resolvers import bolt, oci, storage
from ctrace.resolvers.base import Hit
from ctrace.run import perf, runner, stacks
from tests import boltgen, parser_fuzz
from tests.conftest import need
from tests.parser_fuzz import UID

SEED = 20261206
CRI = "io.kubernetes.cri."
CRIO = "io.kubernetes.cri-o."


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, parser_fuzz.Target]:
    return parser_fuzz.targets(tmp_path_factory.mktemp("fuzz"))


def assert_clean(report: parser_fuzz.Report, cases: int) -> None:
    assert report.crashes == []
    assert report.cases == cases
    # The mutations must reach both outcomes, or they test nothing.
    assert report.parsed > cases // 20 and report.clean_errors > cases // 20, report


# -- bbolt -------------------------------------------------------------------------------------------


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


def test_bbolt_mutations_of_a_real_meta_db(
    real_containerd: tuple[bytes, list[bytes]], targets: dict[str, parser_fuzz.Target]
) -> None:
    report = parser_fuzz.run(targets["bbolt"], [real_containerd[0]], cases=1500, seed=SEED)
    assert_clean(report, 1500)


def test_bbolt_mutations_of_written_files(targets: dict[str, parser_fuzz.Target]) -> None:
    report = parser_fuzz.run(targets["bbolt"], parser_fuzz.seeds("bbolt"), cases=1500, seed=SEED)
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


def test_containerd_bundle_mutations(
    real_containerd: tuple[bytes, list[bytes]], targets: dict[str, parser_fuzz.Target]
) -> None:
    target = targets["containerd"]
    (captured,) = parser_fuzz.seeds("containerd")
    hit = target.parse(captured)
    assert isinstance(hit, Hit) and hit.pod is not None and hit.pod.name == "web-7f"
    report = parser_fuzz.run(target, [captured, *real_containerd[1]], cases=600, seed=SEED)
    assert_clean(report, 600)


def test_crio_state_mutations(targets: dict[str, parser_fuzz.Target]) -> None:
    seeds = parser_fuzz.seeds("cri-o")
    hit = targets["cri-o"].parse(seeds[1])
    assert isinstance(hit, Hit) and hit.container.name == "agent" and hit.pod.uid == UID
    report = parser_fuzz.run(targets["cri-o"], seeds, cases=600, seed=SEED)
    assert_clean(report, 600)


def test_containers_json_mutations(targets: dict[str, parser_fuzz.Target]) -> None:
    (raw,) = parser_fuzz.seeds("containers.json")
    hit = targets["containers.json"].parse(raw)
    assert isinstance(hit, Hit) and hit.container.name == "web"
    assert hit.container.image == "localhost/ctrace-capture/hello:1"
    report = parser_fuzz.run(targets["containers.json"], [raw], cases=600, seed=SEED)
    assert_clean(report, 600)


def test_perf_script_mutations(targets: dict[str, parser_fuzz.Target]) -> None:
    (raw,) = parser_fuzz.seeds("perf")
    assert [len(s.frames) for s in perf.parse(raw.decode())] == [7, 7, 7]
    report = parser_fuzz.run(targets["perf"], [raw], 1000, SEED)
    assert report.crashes == [] and report.cases == 1000


def test_bpftrace_map_dump_mutations(targets: dict[str, parser_fuzz.Target]) -> None:
    seeds = parser_fuzz.seeds("map-dump")
    assert len(seeds) == 3
    for raw in seeds:
        (found,) = stacks.parse_stacks(raw.decode().splitlines())
        assert found.probe == "func_c" and len(found.addresses) == 5 and found.calls > 10
    report = parser_fuzz.run(targets["map-dump"], seeds, 1000, SEED)
    assert report.crashes == [] and report.cases == 1000


def test_inputs_that_broke_the_parsers() -> None:
    """What the fuzz runs found before issue 22's fixes, each a traceback then."""
    long = "9" * 5000  # int() refuses over 4300 digits (Python 3.11)
    assert perf.parse(f"x {long}/1\n\t1 f+0x1 (/a)\n") == []
    assert perf.parse("x \u00b2/1\n") == []  # '\u00b2'.isdigit(), but not int()
    assert stacks.parse_stacks([f"@stacks[f, {long}, 0, ", "\t10 x", "]: 1"]) == []
    assert stacks.parse_stacks(["@stacks[f, 1, 0, ", "\t10 x", f"]: {long}"]) == []
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
    proc = runner.start(["printf", dump], stdout=subprocess.PIPE)
    out = io.StringIO()
    watch = runner.Watch(proc, out)
    assert proc.wait(timeout=10) == 0
    assert stacks.parse_stacks(watch.join()) == [stacks.Stack("f", 1, (0x10,), 2)]
    assert out.getvalue() == "\ufffd shown\n"
