"""ctrace: from a process, container or pod to a bpftrace uprobe command that fires."""

__version__ = "0.1.0"
__all__ = ["__version__"]
