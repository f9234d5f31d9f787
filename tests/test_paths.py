"""Resolving paths inside a container root, with decoys where an escape would land."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctrace.errors import NotFound, NotTraceable
from ctrace.proc.paths import resolve_in_root, same_file
from tests.conftest import need


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "opt/agent/bin").mkdir(parents=True)
    (r / "usr/bin").mkdir(parents=True)
    (r / "opt/agent/bin/agent-1.2").write_text("in root")
    os.symlink("/opt/agent/bin/agent-1.2", r / "usr/bin/agent")
    return r


def test_absolute_symlink_resolves_inside_root(root: Path) -> None:
    assert resolve_in_root(str(root), "/usr/bin/agent") == "/opt/agent/bin/agent-1.2"


def test_relative_symlink_and_dotdot(root: Path) -> None:
    os.symlink("../../opt/agent/bin/agent-1.2", root / "usr/bin/rel")
    assert resolve_in_root(str(root), "/usr/bin/rel") == "/opt/agent/bin/agent-1.2"
    assert resolve_in_root(str(root), "/usr/../usr/./bin/agent") == "/opt/agent/bin/agent-1.2"


def test_dotdot_cannot_climb_out(root: Path, tmp_path: Path) -> None:
    (tmp_path / "decoy").write_text("host file")
    os.symlink("../../../../decoy", root / "usr/bin/escape")
    # Clamped at the root, the link points at /decoy inside it, which does not exist.
    with pytest.raises(NotFound):
        resolve_in_root(str(root), "/usr/bin/escape")
    (root / "decoy").write_text("container file")
    assert resolve_in_root(str(root), "/usr/bin/escape") == "/decoy"


def test_absolute_link_to_host_path_stays_inside(root: Path, tmp_path: Path) -> None:
    host_target = tmp_path / "hostonly"
    host_target.write_text("host")
    os.symlink(str(host_target), root / "usr/bin/abs")
    with pytest.raises(NotFound):
        resolve_in_root(str(root), "/usr/bin/abs")


def test_symlink_loop_is_refused(root: Path) -> None:
    os.symlink("/loop2", root / "loop1")
    os.symlink("/loop1", root / "loop2")
    with pytest.raises(NotTraceable, match="symbolic links"):
        resolve_in_root(str(root), "/loop1")


def test_same_file(root: Path) -> None:
    real = str(root / "opt/agent/bin/agent-1.2")
    assert same_file(real, str(root / "opt/agent/bin/../bin/agent-1.2"))
    assert not same_file(real, str(root / "usr/bin"))
    assert not same_file(real, str(root / "missing"))


def test_kernel_agrees_with_the_walk(root: Path) -> None:
    from ctrace.proc.paths import RESOLVE_IN_ROOT, openat2

    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = openat2(rootfd, "usr/bin/agent", RESOLVE_IN_ROOT)
        if fd is None:
            need(False, "this kernel has no openat2", optional=True)
        assert os.fstat(fd).st_ino == os.stat(root / "opt/agent/bin/agent-1.2").st_ino
        os.close(fd)
    finally:
        os.close(rootfd)


def test_swapped_tree_is_caught(root: Path) -> None:
    from ctrace.proc.paths import verify_in_root

    # As if /opt/agent/bin/agent-1.2 had been replaced by a symlink after the walk.
    (root / "opt/agent/bin/agent-1.2").unlink()
    (root / "opt/agent/bin/other").write_text("x")
    os.symlink("other", root / "opt/agent/bin/agent-1.2")
    with pytest.raises(NotTraceable, match="changed while it was resolved"):
        verify_in_root(str(root), "/usr/bin/agent", "/opt/agent/bin/agent-1.2")


def test_proc_root_of_a_live_process(tmp_path: Path) -> None:
    me = os.getpid()
    exe = os.readlink("/proc/self/exe")
    assert resolve_in_root(f"/proc/{me}/root", exe) == os.path.realpath(exe)
