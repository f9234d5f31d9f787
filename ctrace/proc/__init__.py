"""The only readers of /proc: pure parsers and thin readers (procfs), a process's container
(placement, from its runtime's monitor (monitors) or its cgroup (cgroups)), mapped files
(mapped), and the in-root path walk (paths)."""

__all__ = ["cgroups", "mapped", "monitors", "paths", "placement", "procfs"]
