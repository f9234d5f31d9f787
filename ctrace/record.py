"""``typing.NamedTuple``'s class syntax at run time without importing typing.

Every ctrace command starts by importing its modules, and those declare ~30
NamedTuples: through ``typing`` that is the import of typing plus, per class, an
evaluation of each annotation (a compile() per field): a noticeable share of a cached
``ctrace symbols``. ``Record`` makes the same ``collections.namedtuple`` from the
same class body and leaves the annotations as the strings they are (every module
has ``from __future__ import annotations``); mypy sees ``typing.NamedTuple``.

``TYPE_CHECKING`` is False here and true to mypy, which reads any name
``TYPE_CHECKING`` so (as pip does with its own flag): modules import it from
here, not from typing, and keep their typing-only imports under it.
"""

from __future__ import annotations

import collections

__all__ = ["TYPE_CHECKING", "Record"]

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:
    _NOT_COPIED = frozenset(("__annotations__", "__module__", "__qualname__", "__dict__", "__weakref__"))

    class _RecordType(type):
        def __new__(mcs, name, bases, ns):
            if not bases:  # Record itself
                return super().__new__(mcs, name, bases, ns)
            fields = tuple(ns.get("__annotations__", {}))
            with_default = [f for f in fields if f in ns]
            if fields[len(fields) - len(with_default) :] != tuple(with_default):
                raise TypeError(f"{name}: a field without a default follows one with a default")
            cls = collections.namedtuple(name, fields, defaults=[ns[f] for f in with_default], module=ns["__module__"])
            for key, value in ns.items():
                if key not in fields and key not in _NOT_COPIED:
                    setattr(cls, key, value)
            cls.__annotations__ = dict(ns.get("__annotations__", {}))
            return cls

    class Record(metaclass=_RecordType):
        """Subclass it as typing.NamedTuple; the class made is a collections.namedtuple."""
