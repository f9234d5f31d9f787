"""Parsers of /proc text, on captured samples, and the readers on this machine's /proc."""

from __future__ import annotations

import os

import pytest

from ctrace.errors import NotFound, NotTraceable
from ctrace.proc import procfs
from tests.conftest import need

HOST_STATUS = """Name:\tbash
Umask:\t0022
State:\tS (sleeping)
Tgid:\t1229
Ngid:\t0
Pid:\t1229
PPid:\t1
NStgid:\t1229
NSpid:\t1229
NSpgid:\t1229
NSsid:\t1229
Threads:\t1
"""

# The tracing-basics post's section 7.3 container: host PID 10390 is PID 1 in its container.
CONTAINER_STATUS = """Name:\tmybin
Umask:\t0022
State:\tS (sleeping)
Tgid:\t10390
Pid:\t10390
PPid:\t10363
NStgid:\t10390\t1
NSpid:\t10390\t1
NSpgid:\t10390\t1
NSsid:\t10390\t1
Threads:\t5
"""

# kind: the host, the kind node container, and the pod: three levels.
KIND_STATUS = """Name:\tcilium-agent
State:\tS (sleeping)
Tgid:\t48211
Pid:\t48211
PPid:\t48190
NStgid:\t48211\t3177\t1
NSpid:\t48211\t3177\t1
NSpgid:\t48211\t3177\t1
NSsid:\t48211\t3177\t1
"""

OLD_KERNEL_STATUS = "Name:\told\nState:\tR (running)\nTgid:\t42\nPid:\t42\nPPid:\t1\n"


@pytest.mark.parametrize(
    ("text", "nspid", "ppid"),
    [
        (HOST_STATUS, (1229,), 1),
        (CONTAINER_STATUS, (10390, 1), 10363),
        (KIND_STATUS, (48211, 3177, 1), 48190),
        (OLD_KERNEL_STATUS, (42,), 1),
    ],
)
def test_parse_status_nspid_levels(text: str, nspid: tuple[int, ...], ppid: int) -> None:
    st = procfs.parse_status(text)
    assert st.nspid == nspid
    assert st.nstgid == nspid
    assert st.ppid == ppid
    assert st.tgid == nspid[0]


def test_parse_status_keeps_all_ns_fields() -> None:
    st = procfs.parse_status(KIND_STATUS)
    assert (st.name, st.state) == ("cilium-agent", "S")
    assert st.nspgid == (48211, 3177, 1)
    assert st.nssid == (48211, 3177, 1)


def test_parse_maps_keeps_spaces_and_deleted() -> None:
    text = (
        "00400000-008d2000 r-xp 00000000 fd:02 3233562123                         /my-prog\n"
        "7f7bc6af3000-7f7bc6af6000 r--p 00001000 09:01 38281904   /usr/lib/x86_64-linux-gnu/libwebp.so.6.0.2\n"
        "7f0000000000-7f0000001000 r-xp 00000000 fd:02 99   /opt/my app/lib x.so (deleted)\n"
        "7ffe97008000-7ffe97029000 rw-p 00000000 00:00 0                          [stack]\n"
        "7ffe97102000-7ffe97106000 r--p 00000000 00:00 0\n"
    )
    maps = procfs.parse_maps(text)
    assert [m.path for m in maps] == [
        "/my-prog",
        "/usr/lib/x86_64-linux-gnu/libwebp.so.6.0.2",
        "/opt/my app/lib x.so (deleted)",
        "[stack]",
        "",
    ]
    assert maps[1].offset == 0x1000
    assert maps[0].start == 0x400000 and maps[0].end == 0x8D2000
    assert maps[0].inode == 3233562123


def test_parse_cgroup_v1_and_v2() -> None:
    text = (
        "12:pids:/docker/0eb2e76384b3aa\n"
        "1:name=systemd:/docker/0eb2e76384b3aa\n"
        "0::/system.slice/docker-0eb2e76384b3aa.scope\n"
    )
    assert procfs.parse_cgroup(text) == [
        "/docker/0eb2e76384b3aa",
        "/docker/0eb2e76384b3aa",
        "/system.slice/docker-0eb2e76384b3aa.scope",
    ]


def test_parse_ns_link() -> None:
    assert procfs.parse_ns_link("pid:[4026531836]") == 4026531836


def test_readers_on_own_process() -> None:
    me = os.getpid()
    st = procfs.read_status(me)
    assert st.tgid == me and st.nspid[0] == me
    exe, deleted = procfs.read_exe(me)
    assert os.path.samefile(exe, "/proc/self/exe") and not deleted
    ns = procfs.namespaces(me)
    assert ns["pid"] == os.stat("/proc/self/ns/pid").st_ino
    assert me in procfs.pids()


def test_gone_pid_is_not_found() -> None:
    with pytest.raises(NotFound):
        procfs.read_status(2**22 + 12345)


def test_kernel_thread_is_not_traceable() -> None:
    kthreadd = 2
    need("kthreadd" in procfs.read_text(kthreadd, "comm"), "PID 2 is not kthreadd in this PID namespace", optional=True)
    with pytest.raises(NotTraceable, match="kernel thread"):
        procfs.read_exe(kthreadd)
