"""bbolt files written in bbolt's page layout (go.etcd.io/bbolt page.go, meta.go), for the reader's tests.

``build`` writes a tree of buckets (a dict of bytes to bytes or dict) as bbolt
lays it out: two meta pages with their FNV-1a checksums, a freelist page, leaf
pages of at most ``per_leaf`` keys under branch pages, values past a page in
overflow pages, and small buckets without sub-buckets inline in their parent's
leaf. ``dag`` and ``self_referencing`` write the corrupt files of issue 22.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Union

from ctrace.resolvers.bolt import BRANCH, BUCKET, LEAF, MAGIC, META, checksum

FREELIST = 0x10
Tree = Mapping[bytes, Union[bytes, "Tree"]]


class Writer:
    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.pages: list[bytes] = [b"", b"", b""]  # the two metas and the freelist, written last

    def alloc(self, flags: int, count: int, body: bytes) -> int:
        """A page (and its overflow pages) holding ``body``; its id."""
        pgid = len(self.pages)
        span = -(-(HEADER_SIZE + len(body)) // self.page_size)
        page = struct.pack("<QHHI", pgid, flags, count, span - 1) + body
        self.pages.append(page.ljust(span * self.page_size, b"\0"))
        self.pages.extend([b""] * (span - 1))  # the overflow pages' ids are taken
        return pgid

    def reserve(self) -> int:
        self.pages.append(b"\0" * self.page_size)
        return len(self.pages) - 1

    def put(self, pgid: int, flags: int, count: int, body: bytes) -> None:
        """Write a page reserved earlier (for pages that point at each other)."""
        page = struct.pack("<QHHI", pgid, flags, count, 0) + body
        assert len(page) <= self.page_size
        self.pages[pgid] = page.ljust(self.page_size, b"\0")

    def finish(self, root: int, txid: int = 7) -> bytes:
        high = len(self.pages)
        for i in (0, 1):
            fields = struct.pack("<IIIIQQQQQ", MAGIC, 2, self.page_size, 0, root, 0, 2, high, txid - 1 + i)
            meta = struct.pack("<QHHI", i, META, 0, 0) + fields + struct.pack("<Q", checksum(fields))
            self.pages[i] = meta.ljust(self.page_size, b"\0")
        self.pages[2] = struct.pack("<QHHI", 2, FREELIST, 0, 0).ljust(self.page_size, b"\0")
        return b"".join(self.pages)


HEADER_SIZE = 16


def leaf_body(items: list[tuple[int, bytes, bytes]]) -> bytes:
    elems, data = b"", b""
    for i, (flags, key, value) in enumerate(items):
        pos = (len(items) - i) * 16 + len(data)  # from this element to its key
        elems += struct.pack("<IIII", flags, pos, len(key), len(value))
        data += key + value
    return elems + data


def branch_body(children: list[tuple[bytes, int]]) -> bytes:
    elems, data = b"", b""
    for i, (key, pgid) in enumerate(children):
        pos = (len(children) - i) * 16 + len(data)
        elems += struct.pack("<IIQ", pos, len(key), pgid)
        data += key
    return elems + data


def tree_pages(w: Writer, items: list[tuple[int, bytes, bytes]], per_leaf: int) -> int:
    """Leaf pages of at most ``per_leaf`` items, under as many branch levels as it takes; the root's id."""
    level = [
        (items[i][1] if items else b"", w.alloc(LEAF, len(chunk), leaf_body(chunk)))
        for i in range(0, max(len(items), 1), per_leaf)
        for chunk in [items[i : i + per_leaf]]
    ]
    while len(level) > 1:
        level = [
            (level[i][0], w.alloc(BRANCH, len(level[i : i + per_leaf]), branch_body(level[i : i + per_leaf])))
            for i in range(0, len(level), per_leaf)
        ]
    return level[0][1]


def bucket_value(w: Writer, tree: Tree, per_leaf: int) -> bytes:
    items = [
        (BUCKET, k, bucket_value(w, v, per_leaf)) if isinstance(v, Mapping) else (0, k, v)
        for k, v in sorted(tree.items())
    ]
    body = leaf_body(items)
    nested = any(flags & BUCKET for flags, _, _ in items)
    if not nested and 16 + HEADER_SIZE + len(body) < w.page_size // 4:  # bbolt's inlineable()
        return struct.pack("<QQ", 0, 0) + struct.pack("<QHHI", 0, LEAF, len(items), 0) + body
    return struct.pack("<QQ", tree_pages(w, items, per_leaf), 0)


def build(tree: Tree, page_size: int = 4096, per_leaf: int = 8) -> bytes:
    w = Writer(page_size)
    items = [(BUCKET, k, bucket_value(w, v, per_leaf)) for k, v in sorted(tree.items()) if isinstance(v, Mapping)]
    return w.finish(tree_pages(w, items, per_leaf))


def containerd_like(containers: int = 40, page_size: int = 4096) -> Tree:
    """containerd's metadata layout: v1/NAMESPACE/containers/ID/{image, labels/...}, a spec past a page."""
    spec = b'{"ociVersion":"1.1.0","process":{"args":["/hello"]},"pad":"' + b"x" * 5000 + b'"}'
    ns: dict[bytes, Tree | bytes] = {}
    for i in range(containers):
        labels: dict[bytes, Tree | bytes] = {b"app": b"web", b"io.kubernetes.pod.name": b"web-%d" % i}
        ns[b"%064x" % i] = {
            b"image": b"docker.io/library/hello:%d" % i,
            b"labels": labels,
            b"spec": spec if i % 8 == 0 else b"{}",
            b"runtime": {b"name": b"io.containerd.runc.v2"},
        }
    return {b"v1": {b"version": b"\x03", b"k8s.io": {b"containers": ns, b"labels": {b"a": b"b"}}}}


def dag(depth: int, page_size: int = 4096) -> bytes:
    """v1 -> a chain of ``depth`` branch pages, each listing the next page twice (2^depth paths)."""
    w = Writer(page_size)
    bottom = w.alloc(LEAF, 1, leaf_body([(0, b"k", b"v")]))
    below = bottom
    for _ in range(depth):
        below = w.alloc(BRANCH, 2, branch_body([(b"a", below), (b"b", below)]))
    return w.finish(w.alloc(LEAF, 1, leaf_body([(BUCKET, b"v1", struct.pack("<QQ", below, 0))])))


def self_referencing(page_size: int = 4096) -> bytes:
    """v1 -> a branch page whose one element is the page itself."""
    w = Writer(page_size)
    loop = w.reserve()
    w.put(loop, BRANCH, 1, branch_body([(b"a", loop)]))
    return w.finish(w.alloc(LEAF, 1, leaf_body([(BUCKET, b"v1", struct.pack("<QQ", loop, 0))])))
