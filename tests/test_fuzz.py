"""A short fuzz run of the ELF reader in CI (hack/fuzz.py does the long one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctrace.elf import speedups
from tests import elfgen, fuzzing
from tests.conftest import Built, need

SYNTH = [
    elfgen.build([("f", 0x400010, 8)], is64=is64, big=big, machine=m, dynamic=[("d", 0x400020, 4)])
    for is64, big, m in [(True, False, 62), (False, False, 3), (True, True, 21), (False, True, 40)]
]


@pytest.fixture(scope="module")
def seeds(built: Built) -> list[bytes]:
    return [*SYNTH, built["hello-dyn"].read_bytes(), built["hello-dyn-stripped"].read_bytes()]


def test_mutation_run(seeds: list[bytes], tmp_path: Path) -> None:
    report = fuzzing.run(seeds, cases=3000, seed=20261125, workdir=str(tmp_path))
    assert report.crashes == []
    assert report.cases == 3000
    # The mutations must exercise both outcomes, or they test nothing.
    assert report.parsed > 300 and report.clean_errors > 300
    # ... and the C listing was held to the Python one on many of them (tests/fuzzing.py)
    need(speedups.module is not None, "ctrace/elf/_speedups.c is not built (pip install -e . builds it)")
    assert report.compared > 300


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=2048), prefix=st.sampled_from([b"", b"\x7fELF\x02\x01", b"\x7fELF\x01\x02"]))
def test_arbitrary_bytes(tmp_path: Path, data: bytes, prefix: bytes) -> None:
    report = fuzzing.Report()
    fuzzing.check(prefix + data, str(tmp_path / "case"), report)
    assert report.crashes == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    index=st.integers(0, len(SYNTH) - 1),
    edits=st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=12),
)
def test_synthetic_edits(tmp_path: Path, index: int, edits: list[tuple[int, int]]) -> None:
    data = bytearray(SYNTH[index])
    for pos, value in edits:
        data[pos % len(data)] = value
    report = fuzzing.Report()
    fuzzing.check(bytes(data), str(tmp_path / "case"), report)
    assert report.crashes == []
