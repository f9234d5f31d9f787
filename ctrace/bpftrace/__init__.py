"""What bpftrace is told: the version facts (dialect), one row per --action (actions), which
processes a program admits (binding), which name or number attaches where we mean (sites),
and argv and quoting (emit). Pure: no /proc read but binding's mount namespaces, through proc/.
"""

__all__ = ["actions", "binding", "dialect", "emit", "sites"]
