"""Where a process's binary (or mapped library) is: in its own view, on the host, in MergedDir."""

from __future__ import annotations

import os
import shlex

from ctrace import elf
from ctrace.elf import cache as elf_cache
from ctrace.errors import CtraceError, NotFound, NotTraceable
from ctrace.model import Binary, Process
from ctrace.proc import mapped, paths, procfs
from ctrace.progress import progress
from ctrace.record import TYPE_CHECKING, Record
from ctrace.resolvers import Context

if TYPE_CHECKING:
    from collections.abc import Collection


class Loaded(Record):
    """A binary of one process, with what its ELF file told us."""

    process: Process
    binary: Binary
    info: elf.ElfInfo
    warnings: list[str]  # appended to while probes are made
    lib: bool = False  # a library the process maps (--lib), not its executable
    ctx: Context | None = None  # where it was found: for the libraries of the same process


class ElfCache:
    """One parse per file, however many processes run it (keyed by device and inode),

    and across runs through the on-disk cache (elf/cache.py) when ``cache_dir`` is set."""

    def __init__(self, cache_dir: str | None = None) -> None:
        self._by_inode: dict[tuple[int, int], elf.ElfInfo] = {}
        self.cache_dir = cache_dir

    def inspect(self, path: str, root: str = "/", binary_dir: str | None = None) -> elf.ElfInfo:
        st = os.stat(path)
        key = (st.st_dev, st.st_ino)
        if key not in self._by_inode:
            with progress(f"reading the symbols of {os.path.basename(path)}..."):
                self._by_inode[key] = self._inspect(path, root, binary_dir)
        return self._by_inode[key]

    def _inspect(self, path: str, root: str, binary_dir: str | None) -> elf.ElfInfo:
        # Keyed on the root as spelled (/proc/PID/root): the debug files found are stored
        # with that prefix, and sites.bcc_visible compares them with the path bpftrace gets.
        # A process's next run hits the cache; another process of the same file parses anew.
        def compute(p: str, **_: object) -> elf.ElfInfo:
            return elf.inspect(p, root, binary_dir)

        return elf_cache.inspect(path, self.cache_dir, compute, root=root, binary_dir=binary_dir)


def _locate(proc: Process, ctx: Context, lib: str | None) -> tuple[str, str, list[str]]:
    """In-process path, a host path bpftrace can open, and warnings."""
    pid_dir = f"{ctx.proc_root}/{proc.pid}"
    if lib is not None:
        path, running = mapped.library(proc.pid, lib, ctx.proc_root)
        if path.endswith(procfs.DELETED):
            raise NotTraceable(f"{path} mapped by process {proc.pid} was deleted", "restart the process")
    elif proc.deleted:
        exe = f"{pid_dir}/exe"
        return (
            proc.exe,
            exe,
            [
                f"{proc.exe} was deleted or replaced after process {proc.pid} started; probing {exe}"
                " (ustack shows its frames as bare addresses: bpftrace 0.17 cannot open the deleted path to name them)"
            ],
        )
    else:
        path, running = proc.exe, f"{pid_dir}/exe"
    try:
        with procfs.translated(proc.pid, "root"):  # it may exit while we walk its root
            path = paths.resolve_in_root(f"{pid_dir}/root", path)
    except NotFound:
        pass
    candidate = f"{pid_dir}/root{path}"
    if paths.same_file(candidate, running):
        return path, candidate, []
    return path, running, [f"{path} inside process {proc.pid}'s root is not the mapped file; using {running}"]


def _merged(proc: Process, path: str, host_path: str) -> str | None:
    """The container's root filesystem on the host + path (docker's MergedDir, a containerd task's
    rootfs, podman's and CRI-O's mount point), only when it is the very file the process runs
    (not a volume, bind mount or copy)."""
    c = proc.container
    merged_dir = (c.merged_dir or c.rootfs) if c else None
    if not merged_dir or proc.deleted:
        return None
    candidate = merged_dir.rstrip("/") + path
    return candidate if paths.same_file(candidate, host_path) else None


def _shared(proc: Process, path: str, host_path: str, ctx: Context, lib: bool, mates: Collection[int]) -> list[str]:
    others = [p for p in mapped.sharers(host_path, proc.pid, ctx.proc_root, libraries=lib) if p not in mates]
    if not others:
        return []
    shown = ", ".join(str(p) for p in others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")
    return [
        f"{path} is the same file as process(es) {shown} {'map' if lib else 'run'} (a shared image layer or "
        f"library): a uprobe on it fires in all of them; each command here admits only its target (see binding)"
    ]


def load(proc: Process, ctx: Context, cache: ElfCache, lib: str | None = None, mates: Collection[int] = ()) -> Loaded:
    """Where the process's binary (or ``lib``) is, seen from inside and from the host.
    ``mates``: the other processes of the target (its container's, when it names the whole
    container), which the warning about other users of the file leaves out."""
    path, host_path, warnings = _locate(proc, ctx, lib)
    warnings = [*proc.notes, *warnings, *_shared(proc, path, host_path, ctx, lib is not None, mates)]
    with procfs.translated(proc.pid, "binary"):  # it may exit while we read
        info = cache.inspect(host_path, f"{ctx.proc_root}/{proc.pid}/root", os.path.dirname(path))
    deleted = proc.deleted and lib is None
    binary = Binary(
        path=path,
        host_path=host_path,
        merged_path=None if deleted else _merged(proc, path, host_path),
        build_id=info.build_id,
        stripped=info.stripped,
        language=info.language,
        deleted=deleted,
    )
    if info.stripped:
        counts = ", ".join(f"{n} from {src}" for src, n in info.sources().items()) or "none"
        warnings.append(f"{path} is stripped (no .symtab): functions found: {counts}")
    return Loaded(proc, binary, info, warnings, lib is not None, ctx)


def elsewhere(loaded: Loaded, pattern: str) -> str | None:
    """When ``pattern`` names no function of the executable, the libraries it maps that
    have one (redis maps jemalloc, whose malloc is the one it calls), as a command to run."""
    from ctrace.plan import match

    ctx, proc = loaded.ctx, loaded.process
    if loaded.lib or ctx is None:
        return None
    try:
        files = mapped.mapped_files(proc.pid, ctx.proc_root)
    except (NotFound, OSError):
        return None
    cache, found = ElfCache(ctx.cache_dir), []
    for path in mapped.libraries(proc.pid, ctx.proc_root):
        try:
            info = cache.inspect(files[path], f"{ctx.proc_root}/{proc.pid}/root", os.path.dirname(path))
        except (CtraceError, OSError):
            continue  # not ELF, or unmapped meanwhile
        hits, tier = match.match(info.symbols, pattern, info.demangled)
        if hits and tier != "substring":
            found.append(path)
    if not found:
        return None
    libs = ", ".join(os.path.basename(p) for p in found)
    lib = mapped.stem(found[0])
    again = shlex.join(["ctrace", "target", f"pid:{proc.pid}", "--lib", lib, "--func", pattern])
    return f"{pattern!r} is in {libs}, which process {proc.pid} maps: '{again}'"


def own_mount_ns(pid: int, ctx: Context) -> bool:
    """Whether the process sees the same mount namespace as ctrace (and the bpftrace it prints)."""
    return procfs.shares_mount_ns(pid, ctx.proc_root) is not False  # unreadable: as before, assume shared


def path_forms(loaded: Loaded, ctx: Context) -> list[tuple[str, str, bool]]:
    """(form, path, bind by pid filter) to try, the recommended first (the tracing-basics
    post's 2.5.2, 2.5.1, 2.5.3, then exe).

    /proc/PID/root comes first because it works for every storage driver,
    volume and bind mount; MergedDir only for overlay2 files of the image.
    Host-only paths of a process in another mount namespace are bound with a
    pid filter, not -p (see emit.command).
    """
    b, proc = loaded.binary, loaded.process
    exe = f"{ctx.proc_root}/{proc.pid}/exe"
    foreign = not own_mount_ns(proc.pid, ctx)
    forms = [("exe", b.host_path, foreign) if b.host_path == exe else ("proc-root", b.host_path, False)]
    if b.merged_path:
        docker = proc.container is not None and proc.container.merged_dir is not None
        forms.append(("merged" if docker else "rootfs", b.merged_path, foreign))
    if foreign and not b.deleted:
        forms.append(("pid-path", b.path, False))  # -p makes bpftrace read it inside the process's root
    if not loaded.lib and b.host_path != exe:
        forms.append(("exe", exe, foreign))
    return forms
