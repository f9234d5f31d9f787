"""A read-only reader of bbolt files (go.etcd.io/bbolt), enough for containerd's metadata database.

containerd keeps a container's image and labels (the CRI plugin puts a pod's
labels on its sandbox) in ``<root>/io.containerd.metadata.v1.bolt/meta.db``,
not in the task bundle. The file is read through mmap, from the meta page with
the higher transaction id, following only the pages on the way to the keys
asked for. Layout (bbolt's page.go): a 16-byte page header (id, flags, count,
overflow); branch elements (pos, ksize, pgid), leaf elements (flags, pos,
ksize, vsize), positions relative to the element; a bucket value is its root
page and sequence, root 0 meaning the bucket's page follows inline.
"""

from __future__ import annotations

import mmap
import struct

MAGIC = 0xED0CDAED
BRANCH, LEAF, META = 0x01, 0x02, 0x04
BUCKET = 0x01  # a leaf element that is a bucket
HEADER = 16


class BadBolt(ValueError):
    """Not a bbolt file, or a page that does not hold together."""


class Bolt:
    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.data = data
        metas = [self._meta(0), self._meta(1)]
        valid = [m for m in metas if m is not None]
        if not valid:
            raise BadBolt("no valid meta page")
        self.page_size, self.root, _ = max(valid, key=lambda m: m[2])

    def _meta(self, index: int) -> tuple[int, int, int] | None:
        size = 4096 if index else 0  # page 1 sits one page in; the page size is in page 0
        if index:
            first = self._meta(0)
            size = first[0] if first else 4096
        base = index * size + HEADER
        if len(self.data) < base + 64:
            return None
        fields = struct.unpack_from("<IIIIQQQQQ", self.data, base)
        magic, version, page_size, root, txid = fields[0], fields[1], fields[2], fields[4], fields[8]
        if magic != MAGIC or version != 2:
            return None
        return page_size, root, txid

    def get(self, *path: bytes) -> dict[bytes, bytes | None]:
        """The keys of the bucket at ``path`` (values; None for a nested bucket); {} when it is missing."""
        page: tuple[int, int] = (self.root * self.page_size, 0)  # (offset of the page, inline flag)
        for name in path:
            found = self._lookup(page[0], name)
            if found is None or not found[0] & BUCKET:
                return {}
            page = self._bucket(found[1])
        return dict(self._items(page[0]))

    def _bucket(self, value: tuple[int, int]) -> tuple[int, int]:
        start, _length = value
        (root,) = struct.unpack_from("<Q", self.data, start)
        if root == 0:
            return (start + 16, 1)  # inline: the bucket's one leaf page follows its header
        return (root * self.page_size, 0)

    def _lookup(self, offset: int, key: bytes) -> tuple[int, tuple[int, int]] | None:
        for flags, k, value in self._walk(offset):
            if k == key:
                return flags, value
        return None

    def _items(self, offset: int) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = []
        for flags, k, (start, length) in self._walk(offset):
            out.append((k, None if flags & BUCKET else bytes(self.data[start : start + length])))
        return out

    def _walk(self, offset: int, depth: int = 0) -> list[tuple[int, bytes, tuple[int, int]]]:
        """(flags, key, (value offset, value length)) of every leaf element below the page at ``offset``."""
        if depth > 64 or offset + HEADER > len(self.data):
            raise BadBolt(f"a page out of the file at {offset}")
        _pgid, flags, count, _overflow = struct.unpack_from("<QHHI", self.data, offset)
        out: list[tuple[int, bytes, tuple[int, int]]] = []
        for i in range(count):
            elem = offset + HEADER + i * 16
            if flags & BRANCH:
                _pos, _ksize, child = struct.unpack_from("<IIQ", self.data, elem)
                out.extend(self._walk(child * self.page_size, depth + 1))
            elif flags & LEAF:
                eflags, pos, ksize, vsize = struct.unpack_from("<IIII", self.data, elem)
                k = bytes(self.data[elem + pos : elem + pos + ksize])
                out.append((eflags, k, (elem + pos + ksize, vsize)))
            else:
                raise BadBolt(f"page at {offset} is neither a branch nor a leaf")
        return out


def open_bolt(path: str) -> Bolt | None:
    """The database at ``path``, mapped read-only; None when it cannot be opened."""
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    try:
        return Bolt(data)
    except (BadBolt, struct.error):
        return None
