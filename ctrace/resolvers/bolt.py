"""A read-only reader of bbolt files (go.etcd.io/bbolt), enough for containerd's metadata database.

containerd keeps a container's image and labels (the CRI plugin puts a pod's
labels on its sandbox) in ``<root>/io.containerd.metadata.v1.bolt/meta.db``,
not in the task bundle. The file is read through mmap, from the valid meta page
with the higher transaction id, following only the pages on the way to the keys
asked for. Layout (bbolt's page.go): a 16-byte page header (id, flags, count,
overflow); branch elements (pos, ksize, pgid), leaf elements (flags, pos,
ksize, vsize), positions relative to the element; a bucket value is its root
page and sequence, root 0 meaning the bucket's page follows inline.

The file is untrusted input read as root (issue 22): every page is checked to
lie inside the file and below the meta page's high-water mark, its elements to
fit inside the page, and a walk reaches each page at most once, so a corrupt
file whose branch pages share children (a DAG: 2^depth paths) or point back up
(a cycle) is one ``BadBolt``, found in time linear in the file's size.
"""

from __future__ import annotations

import mmap
import struct

from ctrace.errors import EnvironmentProblem

MAGIC = 0xED0CDAED
BRANCH, LEAF, META = 0x01, 0x02, 0x04
BUCKET = 0x01  # a leaf element that is a bucket
HEADER = 16
ELEMENT = 16  # a branch or leaf element
META_FIELDS = struct.Struct("<IIIIQQQQQQ")  # magic .. txid, then checksum (FNV-1a 64 of the 56 bytes before it)
MIN_PAGE, MAX_PAGE = 512, 1 << 20  # bbolt takes the OS page size (4 KiB; 64 KiB on some arm64/ppc64)
MAX_DEPTH = 64  # a bbolt tree of containerd's size is 3 or 4 levels deep


class BadBolt(EnvironmentProblem, ValueError):
    """Not a bbolt file, or a page that does not hold together (containerd.py reads it as "no metadata")."""

    default_hint = "containerd's metadata database is damaged; the task bundles' annotations still name the pods"


def checksum(meta: bytes) -> int:
    """FNV-1a 64, as bbolt's meta.sum64."""
    h = 0xCBF29CE484222325
    for b in meta:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class Bolt:
    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.data = data
        first = self._meta(0, 4096)
        metas = [first, self._meta(1, first[0] if first else 4096)]
        valid = [m for m in metas if m is not None]
        if not valid:
            raise BadBolt("no valid meta page")
        self.page_size, self.root, self.high_water, _ = max(valid, key=lambda m: m[3])

    def _meta(self, index: int, page_size: int) -> tuple[int, int, int, int] | None:
        """(page size, root page, high-water mark, txid) of meta page ``index``; None when it is not valid."""
        base = index * page_size + HEADER
        if len(self.data) < base + META_FIELDS.size:
            return None
        magic, version, size, _, root, _, _, high, txid, check = META_FIELDS.unpack_from(self.data, base)
        if magic != MAGIC or version != 2 or check != checksum(bytes(self.data[base : base + 56])):
            return None
        if not MIN_PAGE <= size <= MAX_PAGE or not 2 <= root < high:
            return None
        return size, root, high, txid

    def get(self, *path: bytes) -> dict[bytes, bytes | None]:
        """The keys of the bucket at ``path`` (values; None for a nested bucket); {} when it is missing."""
        page = self._page(self.root)
        for name in path:
            found = self._lookup(page, name)
            if found is None or not found[0] & BUCKET:
                return {}
            page = self._bucket(found[1])
        return dict(self._items(page))

    def _page(self, pgid: int) -> tuple[int, int]:
        """(offset, end) of page ``pgid`` and its overflow pages."""
        offset = pgid * self.page_size
        if not 2 <= pgid < self.high_water or offset + HEADER > len(self.data):
            raise BadBolt(f"page {pgid} is outside the file")
        (overflow,) = struct.unpack_from("<I", self.data, offset + 12)
        end = offset + (overflow + 1) * self.page_size
        if end > len(self.data):
            raise BadBolt(f"page {pgid}'s {overflow} overflow pages are outside the file")
        return offset, end

    def _bucket(self, value: tuple[int, int]) -> tuple[int, int]:
        start, length = value
        if length < 16:
            raise BadBolt(f"a bucket value of {length} bytes at {start}")
        (root,) = struct.unpack_from("<Q", self.data, start)
        if root == 0:
            if length < 16 + HEADER:
                raise BadBolt(f"an inline bucket of {length} bytes at {start}")
            return (start + 16, start + length)  # inline: the bucket's one leaf page follows its header
        return self._page(root)

    def _lookup(self, page: tuple[int, int], key: bytes) -> tuple[int, tuple[int, int]] | None:
        for flags, k, value in self._walk(page):
            if k == key:
                return flags, value
        return None

    def _items(self, page: tuple[int, int]) -> list[tuple[bytes, bytes | None]]:
        out: list[tuple[bytes, bytes | None]] = []
        for flags, k, (start, length) in self._walk(page):
            out.append((k, None if flags & BUCKET else bytes(self.data[start : start + length])))
        return out

    def _walk(self, page: tuple[int, int]) -> list[tuple[int, bytes, tuple[int, int]]]:
        """(flags, key, (value offset, value length)) of every leaf element below ``page``, in order;
        each page once (a page reached twice is a DAG or a cycle: BadBolt)."""
        out: list[tuple[int, bytes, tuple[int, int]]] = []
        seen: set[int] = set()
        todo = [(page, 0)]
        while todo:
            (offset, end), depth = todo.pop()
            if offset in seen:
                raise BadBolt(f"page {offset // self.page_size} is reached twice: not a tree")
            seen.add(offset)
            flags, elements = self._elements(offset, end)
            if flags & BRANCH:
                if depth >= MAX_DEPTH:
                    raise BadBolt(f"branch pages nested over {MAX_DEPTH} deep at {offset}")
                children = [self._page(child) for _pos, _ksize, child in elements]
                todo.extend((child, depth + 1) for child in reversed(children))
                continue
            for elem, (eflags, pos, ksize, vsize) in zip(range(offset + HEADER, end, ELEMENT), elements):
                key, value = elem + pos, elem + pos + ksize
                if value + vsize > end:
                    raise BadBolt(f"a leaf element at {elem} reaches past its page")
                out.append((eflags, bytes(self.data[key:value]), (value, vsize)))
        return out

    def _elements(self, offset: int, end: int) -> tuple[int, list[tuple[int, ...]]]:
        """The page's flags and its elements' fields (branch: pos, ksize, pgid; leaf: flags, pos, ksize, vsize)."""
        _pgid, flags, count = struct.unpack_from("<QHH", self.data, offset)
        if offset + HEADER + count * ELEMENT > end:
            raise BadBolt(f"page at {offset} lists {count} elements, more than it holds")
        if flags & BRANCH:
            form = struct.Struct("<IIQ")
        elif flags & LEAF:
            form = struct.Struct("<IIII")
        else:
            raise BadBolt(f"page at {offset} is neither a branch nor a leaf")
        start = offset + HEADER
        elements = [form.unpack_from(self.data, start + i * ELEMENT) for i in range(count)]
        return flags, elements


def open_bolt(path: str) -> Bolt | None:
    """The database at ``path``, mapped read-only; None when it cannot be opened."""
    try:
        with open(path, "rb") as f:
            data = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    try:
        return Bolt(data)
    except BadBolt:
        return None
