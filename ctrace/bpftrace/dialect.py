"""The one place that knows bpftrace versions: what the bpftrace that will run a program
accepts, needs and warns about. Everything else asks a Dialect.

Measured on Debian's builds (bookworm 0.17.0, trixie 0.23.2, sid 0.27.1), each program
ctrace prints compiled and fired under all three (tests/test_matrix.py). A release
between two measured ones takes the fact of the release that introduced it where
bpftrace's history says (cited), else the conservative side: the form every measured
release accepts.
"""

from __future__ import annotations

import os
import re

from ctrace.bpftrace.pidns import PidNs
from ctrace.errors import EnvironmentProblem, UsageError
from ctrace.record import Record

Version = tuple[int, int, int]

# What bpftrace says about the machine, not about the program: allowed in every test of
# a printed program, on every version.
MACHINE_WARNINGS = (
    # bpftrace cannot raise the locked-memory limit (no CAP_SYS_RESOURCE in the bounding set);
    # 0.17 prints it as "ERROR:", later releases as "WARNING:", and the program runs.
    re.compile(r"couldn't set RLIMIT_MEMLOCK"),
    # 0.27 reads the kernel's list of traceable functions at start; tracefs may not offer it.
    re.compile(r"Could not read functions from /sys/kernel/tracing/available_filter_functions"),
)
# The warning every release prints for an address probe it cannot check (a stripped file,
# or 0.17, which checks no offset): it comes with --unsafe, and only there, and ctrace's
# output says why --unsafe is in the command.
UNSAFE_WARNING = re.compile(r"Could not determine instruction boundary")
# Errors bpftrace 0.17 prints now and then at exit after naming many user stacks (seen with
# C++ binaries most, and while other bpftrace sessions run): its own descriptors turn up
# closed, so a stack id, a probe's close or the END program fails. Not a property of the
# program (the same program runs clean the next time, and 0.23 and 0.27 never print them);
# the tests count them apart, and the data before them must be right.
EXIT_DEFECTS = re.compile(
    r"failed to close perf event FDs|failed to look up stack id .*: -9|Error loading program: END"
)
# "Attaching 1 probe..." (0.17, 0.23) or "Attached 1 probe" (0.27): the probes are in.
ATTACHED = re.compile(r"^Attach(?:ing \d+ probes?\.\.\.|ed \d+ probes?)$", re.M)
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
OLDEST: Version = (0, 17, 0)  # what ctrace assumes when no bpftrace can be asked
OFFSET_PROBES_SINCE: Version = (0, 23, 0)  # measured: Debian's 0.17 lacks them, 0.23 has them


class Dialect(Record):
    """The capability facts of one bpftrace binary, from its version."""

    version: Version = OLDEST
    program: str = "bpftrace"  # argv[0] of every command printed, and what --run starts
    known: bool = False  # the version was read from the binary, not assumed
    pidns: PidNs | None = None  # ctrace's PID namespace when it is a child one (bpftrace/pidns.py)

    @property
    def name(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def pid_filters_uprobes(self) -> bool:
        """Whether ``-p PID`` restricts uprobes to that process: not in 0.17 (a replica of
        the same file fired; measured), yes in 0.23 and 0.27 (measured). bpftrace PR #2830
        ("pid targeting for shared libs", released in 0.20) passes the PID to the attach.
        The emitter binds with a predicate on every version; this says what -p adds."""
        return self.version >= (0, 20, 0)

    @property
    def ns_pid_helper(self) -> bool:
        """Whether ``pid``, ``tid``, ``ustack`` and -p's filter go through get_ns_current_pid_tgid
        when bpftrace runs in a child PID namespace: 0.23 and 0.27 do (measured: "retcode -22",
        bpftrace issue 4384, for a task of a deeper namespace: the stack is lost, and -p warns in
        every tracepoint); 0.17 reads the init namespace's PID (measured). Releases between are
        taken to do it."""
        return self.version > OLDEST

    @property
    def offset_probes(self) -> bool:
        """Whether ``uprobe:FILE:sym+N`` is accepted and checked against instruction
        boundaries. Debian's 0.17 refuses it even with --unsafe ("compiled without
        (k|u)probe offset support"); 0.23 and 0.27 check it and attach, no --unsafe."""
        return self.version >= OFFSET_PROBES_SINCE

    def keeps_offset(self, name: str) -> bool:
        """Whether ``uprobe:FILE:"name"+N`` attaches at name+N. A release with offset probes
        reads a name holding a '*', or a '[' and a ']', as a wildcard even inside quotes
        (bpftrace util/wildcard.cpp has_wildcard; no escape exists) and attaches each match
        at its entry, +N dropped: measured on 0.23 and 0.27 for ``main.(*Book).Reconcile+57``
        and ``main.F[go.shape.int_0]+51`` (issue 22). Their virtual address attaches at the
        site on both, checked, without --unsafe (sites.return_sites)."""
        wildcard = "*" in name or ("[" in name and "]" in name)
        return self.offset_probes and not wildcard

    @property
    def first_namesake(self) -> bool:
        """Whether an address probe lands on the first function of its symbol's name: bpftrace
        turns ``uprobe:FILE:ADDR`` into (the name of the symbol covering ADDR, offset) and looks
        that name up again, taking the first symbol so named (bcc walks .dynsym and .symtab in
        section order). Of two ``static int work(int)`` (or two ``(anonymous namespace)::work``)
        a probe at either address fires at the first, entry, RET (vaddr) and uretprobe alike:
        measured on 0.17, 0.23 and 0.27 (issue 22); bpftrace attached_probe.cpp
        resolve_offset_uprobe (bcc_resolve_symname's first match up to 0.23, resolve_symbols'
        front() since 0.24). ``name+N`` does not reach the second either ("Offset outside the
        function bounds": N is checked against the first's size). A number no symbol covers is
        taken as a file offset, as is, with --unsafe (every release): that reaches it."""
        return True

    def namesake_reason(self, first: int | None) -> str:
        """Why a namesake's command carries --unsafe (a file offset, not its address)."""
        other = f"the function of its name at 0x{first:x}" if first is not None else "another function of its name"
        return (
            f"--unsafe: bpftrace {self.name} would attach its address to {other} (it looks an address's "
            "symbol up again by name and takes the first), so it is given as a file offset no symbol covers, "
            "which bpftrace takes as is and cannot check; ctrace took it from the function's own table"
        )

    def namesake_hint(self, name: str, first: int | None) -> str:
        """What to do about a function bpftrace cannot reach because another has its name."""
        which = f"only the {name} at 0x{first:x}" if first is not None else f"no {name} for sure"
        return (
            f"bpftrace {self.name} reaches {which} through that name, and this file's offsets are addresses "
            "inside its functions too, so no number reaches this one (a -no-pie build's file offset would)"
        )

    def return_hint(self) -> str:
        since = ".".join(map(str, OFFSET_PROBES_SINCE))
        return f"use --probe uretprobe (not for Go), or run a bpftrace that checks sym+offset probes ({since} or later)"

    @property
    def delete_returns(self) -> bool:
        """``delete()`` returns whether it deleted (bpftrace PR #4186, released in 0.24):
        from then on a bare ``delete(...)`` warns "Return value discarded", and before
        it ``$x = delete(...)`` is an error."""
        return self.version >= (0, 24, 0)

    @property
    def resolves_stack_paths(self) -> bool:
        """Whether bpftrace looks up the processes running a probed file, to cache its symbols
        for ``ustack``, through the file's host path: 0.27 warns "Unable to get pids for
        /proc/PID/root/...: Unable to canonicalize" for a file that exists only inside a
        container (the probe still attaches; measured). 0.23 does not (measured); releases
        between are taken to warn. ``config = { cache_user_symbols = "NONE" }`` skips the
        lookup, and 0.23 and 0.27 accept it; 0.17 has no config block."""
        return self.version >= (0, 24, 0)

    def configured(self, program: str) -> str:
        """``program`` with the config block this release needs to compile it without warnings."""
        if self.resolves_stack_paths and "ustack" in program:
            # ctrace names the frames of --run's stacks itself; only the per-call stack
            # printing loses bpftrace's symbol cache.
            return f'config = {{ cache_user_symbols = "NONE" }} {program}'
        return program

    def delete(self, element: str) -> str:
        """A statement that deletes a map element without a warning on this release."""
        return f"$gone = delete({element});" if self.delete_returns else f"delete({element});"

    def unsafe_reason(self, stripped_number: bool) -> str:
        """Why a command carries --unsafe, in the words of its output."""
        if stripped_number:
            return (
                "--unsafe: the number is a file offset no symbol bpftrace reads covers, so bpftrace cannot "
                "check it is an instruction boundary; ctrace took it from the function's own table"
            )
        return (
            f"--unsafe: bpftrace {self.name} cannot check an offset inside a function (no sym+offset "
            "support), so the RET is given as a file offset; ctrace found it by disassembly"
        )


def parse_version(text: str) -> Version | None:
    """``bpftrace v0.23.2`` (or ``bpftrace 0.17.0-...``) -> (0, 23, 2)."""
    found = _VERSION.search(text)
    if found is None:
        return None
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


def of(program: str | None, cache_dir: str | None = None) -> Dialect:
    """The dialect of the bpftrace that will run the programs: ``program`` (--bpftrace) or
    ``bpftrace`` from PATH. Its version is read once per binary (keyed by path, size and
    mtime) and kept in the cache directory."""
    import shutil

    from ctrace.bpftrace import pidns

    given = program is not None
    name = program if program is not None else "bpftrace"
    if given and not name.strip():
        raise UsageError("--bpftrace needs a path", "e.g. --bpftrace /usr/bin/bpftrace")
    path = shutil.which(name)
    if path is None:
        if given:
            raise EnvironmentProblem(f"--bpftrace {name}: no such executable", "give the path of a bpftrace binary")
        if pidns.own() is not None:
            raise EnvironmentProblem(
                "ctrace runs in a child PID namespace and no bpftrace is here to read its level",
                "install bpftrace, or give its path with --bpftrace",
            )
        return Dialect(OLDEST, name, False)  # printed commands still help; --run says it is missing
    version = _cached_version(path, cache_dir)
    if version is None:
        raise EnvironmentProblem(f"{name} --version did not print a bpftrace version", "check the --bpftrace path")
    inum = pidns.own()
    return Dialect(version, name, True, pidns.learn(path, inum, cache_dir) if inum is not None else None)


def _cached_version(path: str, cache_dir: str | None) -> Version | None:
    from ctrace.bpftrace.pidns import read_cache, write_cache

    st = os.stat(path)
    key = f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}"
    store = os.path.join(cache_dir, "bpftrace-versions.json") if cache_dir else None
    known = read_cache(store)
    if isinstance(known.get(key), list) and len(known[key]) == 3:
        a, b, c = known[key]
        return a, b, c
    version = _ask(path)
    if version is not None and store is not None:
        known[key] = list(version)
        write_cache(store, known)  # read-only: the next run asks --version once more
    return version


def _ask(path: str) -> Version | None:
    import subprocess

    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_version(out.stdout + out.stderr)
