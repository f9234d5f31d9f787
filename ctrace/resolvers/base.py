"""What every resolver module provides (pre-commit's lang_base.Language idea)."""

from __future__ import annotations

from ctrace.record import TYPE_CHECKING, Record

if TYPE_CHECKING:
    from typing import Protocol

    from ctrace.model import Container, Pod, Process
    from ctrace.proc.cgroups import Placement
else:
    Protocol = object  # subclassed for mypy's sake (ctrace/record.py)


class K8sOptions(Record):
    """kubectl's flags, with kubectl's meaning (None: kubectl's default)."""

    namespace: str | None = None
    all_namespaces: bool = False
    context: str | None = None
    kubeconfig: str | None = None
    container: str | None = None
    selector: str | None = None
    under_kubectl: bool = False  # run as `kubectl ctrace`: a bare NAME is a pod
    request_timeout: float = 10.0


class Context(Record):
    """The outside world a resolver may look at, passed in (STYLE.md habit 4)."""

    proc_root: str = "/proc"  # procfs.PROC, not imported: `symbols FILE` reads no /proc
    self_pid: int = 0  # ctrace's own PID, never a target
    k8s: K8sOptions = K8sOptions()
    all_matches: bool = False  # `target --all`: a prefix naming several containers takes them all
    cache_dir: str | None = None  # where parsed binaries are cached (elf/cache.py); None: no cache


class Resolver(Protocol):
    """A module that turns a target string into processes."""

    @property
    def NAME(self) -> str: ...

    def claims(self, target: str, ctx: Context) -> bool:
        """Cheap: whether this resolver recognises the target at all."""
        ...

    def resolve(self, target: str, ctx: Context) -> list[Process]:
        """The processes of the target; raises NotFound when there are none."""
        ...


class Hit(Record):
    """A running container a runtime knows, and its pod when CRI metadata names one."""

    container: Container
    pod: Pod | None = None
    exact: bool = True  # the target is its name, its ID or its pod's name, not a prefix of one
    by_pod: bool = False  # matched by its pod's name
    labels: tuple[tuple[str, str], ...] = ()  # a sandbox's pod labels, where the runtime keeps them on disk
    group: str = ""  # the ID of the container whose shim also serves this one (CRI: the pod's sandbox)


class Monitors(Record):
    """The runtime monitors running on this host, found by one pass over /proc (``runtimes.Scan``)."""

    shims: tuple[int, ...] = ()  # containerd-shim* PIDs
    conmons: tuple[int, ...] = ()  # conmon PIDs (podman, CRI-O)


class Runtime(Protocol):
    """A container runtime: one module in ``ctrace/resolvers``, one line in ``registry.RUNTIMES``.

    Its root filesystem path is ``Container.rootfs`` (or docker's ``merged_dir``),
    filled by ``find`` and ``describe``.
    """

    @property
    def NAME(self) -> str: ...

    @property
    def LIST(self) -> str:
        """How a user lists this runtime's containers (for hints)."""
        ...

    def find(self, target: str, ctx: Context, monitors: Monitors) -> list[Hit]:
        """Running containers whose name, ID or pod name is ``target`` or starts with it."""
        ...

    def describe(self, where: Placement, ctx: Context) -> Hit | None:
        """The container a process is placed in (procfs.placement); None when this runtime has no such container."""
        ...
