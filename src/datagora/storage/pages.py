"""Manifest pages (``datagora.manifest-page.v1``): a large manifest's share list as
a hash tree of fixed-size documents.

A format-4 manifest does not list its share addresses itself. They are cut, in
Merkle leaf order, into **leaf pages** of ``leaves_per_page`` addresses (a power of
two, so each full page is a complete subtree of the dataset's RFC 6962 tree);
when there are more than ``fanout`` pages, **index pages** list up to ``fanout``
pages of the level below, and so on. The manifest holds the entries of the top
level: each page's SHA-256 (its storage address) and its subtree root. So the
manifest hash commits to every page, every page to every share address, and the
dataset's Merkle root (unchanged from format 3) is computed from the entries'
subtree roots alone.

Pure logic, no I/O: :class:`TreeWriter` cuts a stream of leaves into pages,
:func:`verify_page` turns fetched bytes into a :class:`VerifiedPage`, and
:func:`walk_pages` / :func:`walk_pages_sync` visit the pages (leaf pages in
leaf order) with a caller-supplied fetch, holding at most one page per level.
Byte layout: ``docs/formats.md``, "Manifest pages".
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from datagora.storage.errors import IntegrityError, ManifestError
from datagora.storage.merkle import MerkleProof, MerkleTree, leaf_hash, node_hash, root_of_hashes

__all__ = [
    "DEFAULT_FANOUT",
    "DEFAULT_LEAVES_PER_PAGE",
    "MAX_DEPTH",
    "PAGE_MAGIC",
    "PageRef",
    "PageTree",
    "TreeWriter",
    "VerifiedPage",
    "leaf_proof",
    "leaf_proof_sync",
    "max_leaves",
    "verify_page",
    "walk_leaf_pages",
    "walk_leaf_pages_sync",
    "walk_pages",
    "walk_pages_sync",
]

PAGE_MAGIC: Final = b"DGMP"
PAGE_VERSION: Final = 1
# magic, version, level, dataset_id, version, first_leaf, count
_HEADER: Final = struct.Struct(">4sBB32sIQI")
PAGE_HEADER_SIZE: Final = _HEADER.size  # 54
DEFAULT_LEAVES_PER_PAGE: Final = 2**15  # a leaf page: 1 MiB of share addresses
DEFAULT_FANOUT: Final = 2**14  # an index page: 1 MiB of (address, root) pairs
MIN_PAGE_PARAMETER: Final = 2
MAX_PAGE_PARAMETER: Final = 2**16
# Root -> index pages -> leaf pages: 2^43 leaves at the defaults.
MAX_DEPTH: Final = 2


def check_tree_parameters(leaves_per_page: int, fanout: int) -> None:
    """Both are powers of two in 2 .. 65536 (so pages align with Merkle subtrees)."""
    for name, value in (("leaves_per_page", leaves_per_page), ("fanout", fanout)):
        if (
            type(value) is not int
            or not MIN_PAGE_PARAMETER <= value <= MAX_PAGE_PARAMETER
            or value & (value - 1)
        ):
            raise ManifestError(
                f"pages.{name} must be a power of two in "
                f"{MIN_PAGE_PARAMETER}..{MAX_PAGE_PARAMETER}, got {value!r}"
            )


def max_leaves(leaves_per_page: int, fanout: int) -> int:
    """The most leaves a tree of :data:`MAX_DEPTH` levels holds."""
    return leaves_per_page * fanout**MAX_DEPTH


def span(level: int, leaves_per_page: int, fanout: int) -> int:
    """Leaves covered by one full page at ``level`` (0 = leaf page)."""
    return int(leaves_per_page * fanout**level)


def tree_depth(leaf_count: int, leaves_per_page: int, fanout: int) -> int:
    """Levels of pages under the manifest: the least ``d >= 1`` whose top level
    has at most ``fanout`` entries."""
    depth = 1
    while -(-leaf_count // span(depth - 1, leaves_per_page, fanout)) > fanout:
        depth += 1
    return depth


@dataclass(frozen=True, slots=True)
class PageRef:
    """A child page as its parent lists it: its SHA-256 address and subtree root."""

    address: bytes
    root: bytes


@dataclass(frozen=True, slots=True)
class PageTree:
    """The page tree of one format-4 manifest (its ``pages`` object), checked
    against the leaf count and the dataset root."""

    dataset_id: bytes
    version: int
    leaf_count: int
    leaves_per_page: int
    fanout: int
    depth: int
    entries: tuple[PageRef, ...]

    def check(self, merkle_root: bytes) -> None:
        """Raise :class:`ManifestError` unless the tree's shape fits ``leaf_count``
        and its entries' roots combine to ``merkle_root``."""
        check_tree_parameters(self.leaves_per_page, self.fanout)
        if self.leaf_count > max_leaves(self.leaves_per_page, self.fanout):
            raise ManifestError(
                f"{self.leaf_count} leaves do not fit {MAX_DEPTH} levels of pages "
                f"({self.leaves_per_page} leaves per page, fanout {self.fanout})"
            )
        want_depth = tree_depth(self.leaf_count, self.leaves_per_page, self.fanout)
        if self.depth != want_depth:
            raise ManifestError(f"pages.depth is {self.depth}, {want_depth} for these leaves")
        want = self.children_of(self.depth, 0, self.leaf_count)
        if len(self.entries) != want:
            raise ManifestError(f"pages.entries lists {len(self.entries)} pages, expected {want}")
        if root_of_hashes([e.root for e in self.entries]) != merkle_root:
            raise ManifestError("merkle root does not match the manifest pages' roots")

    def children_of(self, level: int, first_leaf: int, leaf_count: int) -> int:
        """How many pages of ``level - 1`` a node at ``level`` covering ``leaf_count``
        leaves lists."""
        return -(-leaf_count // span(level - 1, self.leaves_per_page, self.fanout))

    @property
    def page_count(self) -> int:
        """Leaf pages plus index pages: the documents stored besides the manifest."""
        total = 0
        for level in range(self.depth):
            total += -(-self.leaf_count // span(level, self.leaves_per_page, self.fanout))
        return total


class VerifiedPage:
    """A page whose bytes matched its parent's address and subtree root, and
    whose header matched its position. Made only by :func:`verify_page`."""

    __slots__ = ("address", "count", "first_leaf", "level", "raw", "tree")

    def __init__(
        self,
        token: object,
        tree: PageTree,
        address: bytes,
        raw: bytes,
        level: int,
        first_leaf: int,
        count: int,
    ) -> None:
        if token is not _TOKEN:
            raise TypeError("VerifiedPage is made only by verify_page")
        self.tree = tree
        """The page tree (of one manifest) it was verified against."""
        self.address = address
        self.raw = raw
        self.level = level
        self.first_leaf = first_leaf
        self.count = count

    def leaves(self) -> memoryview:
        """A leaf page's share addresses, 32 bytes each, concatenated."""
        if self.level != 0:
            raise TypeError("an index page has no leaves")
        return memoryview(self.raw)[PAGE_HEADER_SIZE:]

    def children(self) -> list[PageRef]:
        """An index page's child pages."""
        if self.level == 0:
            raise TypeError("a leaf page has no children")
        body = self.raw[PAGE_HEADER_SIZE:]
        return [PageRef(body[i : i + 32], body[i + 32 : i + 64]) for i in range(0, len(body), 64)]


_TOKEN: Final = object()


def encode_page(
    dataset_id: bytes, version: int, level: int, first_leaf: int, items: Sequence[bytes]
) -> bytes:
    """A page's bytes: the header, then the leaves (level 0) or the children's
    ``address || root`` (index pages)."""
    header = _HEADER.pack(
        PAGE_MAGIC, PAGE_VERSION, level, dataset_id, version, first_leaf, len(items)
    )
    return header + b"".join(items)


def page_root(level: int, items: Sequence[bytes] | Sequence[memoryview]) -> bytes:
    """The subtree root of a page: RFC 6962 over its leaves, or the combination of
    its children's roots."""
    if level == 0:
        return root_of_hashes([leaf_hash(x) for x in items])
    return root_of_hashes([bytes(x[32:64]) for x in items])


def verify_page(
    raw: bytes, ref: PageRef, tree: PageTree, level: int, first_leaf: int, count: int
) -> VerifiedPage:
    """Check ``raw`` is the page ``ref`` names at this position of ``tree``.

    Raises :class:`IntegrityError`: a page that does not hash to its address, or
    whose header or subtree root does not fit, is refused (tampered or corrupt).
    """
    address = hashlib.sha256(raw).digest()
    if address != ref.address:
        raise IntegrityError(
            f"manifest page {ref.address.hex()} does not match its hash "
            "(tampered or corrupt): refused"
        )
    if len(raw) < PAGE_HEADER_SIZE:
        raise IntegrityError(f"manifest page {ref.address.hex()} is shorter than its header")
    magic, page_version, got_level, dataset_id, version, got_first, got_count = _HEADER.unpack_from(
        raw
    )
    children = count if level == 0 else tree.children_of(level, first_leaf, count)
    item = 32 if level == 0 else 64
    if (
        magic != PAGE_MAGIC
        or page_version != PAGE_VERSION
        or (got_level, dataset_id, version, got_first, got_count)
        != (level, tree.dataset_id, tree.version, first_leaf, children)
        or len(raw) != PAGE_HEADER_SIZE + item * children
    ):
        raise IntegrityError(
            f"manifest page {ref.address.hex()} has a header for another position "
            f"(expected level {level}, first leaf {first_leaf}, {children} entries)"
        )
    body = memoryview(raw)[PAGE_HEADER_SIZE:]
    items = [body[i : i + item] for i in range(0, len(body), item)]
    if page_root(level, items) != ref.root:
        raise IntegrityError(f"manifest page {ref.address.hex()} does not match its subtree root")
    return VerifiedPage(_TOKEN, tree, address, raw, level, first_leaf, count)


@dataclass(frozen=True, slots=True)
class _Slot:
    ref: PageRef
    level: int
    first_leaf: int
    count: int


def _slots(
    tree: PageTree, refs: Sequence[PageRef], level: int, first: int, total: int
) -> list[_Slot]:
    """Positions of the pages ``refs`` at ``level``, covering ``total`` leaves from ``first``."""
    size = span(level, tree.leaves_per_page, tree.fanout)
    out = []
    for i, ref in enumerate(refs):
        start = first + i * size
        out.append(_Slot(ref, level, start, min(size, first + total - start)))
    return out


Fetch = Callable[[PageRef, int, int, int], Awaitable[VerifiedPage]]
FetchSync = Callable[[PageRef, int, int, int], VerifiedPage]


async def walk_pages(tree: PageTree, fetch: Fetch) -> AsyncGenerator[VerifiedPage, None]:
    """Every page, each index page before its children, leaf pages in leaf order.
    ``fetch(ref, level, first_leaf, count)`` returns the verified page (e.g. trying
    nodes until one serves bytes that verify); at most one page per level is held."""
    stack = [iter(_slots(tree, tree.entries, tree.depth - 1, 0, tree.leaf_count))]
    while stack:
        slot = next(stack[-1], None)
        if slot is None:
            stack.pop()
            continue
        page = await fetch(slot.ref, slot.level, slot.first_leaf, slot.count)
        yield page
        if slot.level > 0:
            stack.append(
                iter(_slots(tree, page.children(), slot.level - 1, slot.first_leaf, slot.count))
            )


async def walk_leaf_pages(tree: PageTree, fetch: Fetch) -> AsyncGenerator[VerifiedPage, None]:
    """The leaf pages of :func:`walk_pages`, in leaf order."""
    async for page in walk_pages(tree, fetch):
        if page.level == 0:
            yield page


def walk_pages_sync(tree: PageTree, fetch: FetchSync) -> Iterator[VerifiedPage]:
    """:func:`walk_pages` with a synchronous fetch (a node reading its own store)."""
    stack = [iter(_slots(tree, tree.entries, tree.depth - 1, 0, tree.leaf_count))]
    while stack:
        slot = next(stack[-1], None)
        if slot is None:
            stack.pop()
            continue
        page = fetch(slot.ref, slot.level, slot.first_leaf, slot.count)
        yield page
        if slot.level > 0:
            stack.append(
                iter(_slots(tree, page.children(), slot.level - 1, slot.first_leaf, slot.count))
            )


def walk_leaf_pages_sync(tree: PageTree, fetch: FetchSync) -> Iterator[VerifiedPage]:
    """The leaf pages of :func:`walk_pages_sync`, in leaf order."""
    return (page for page in walk_pages_sync(tree, fetch) if page.level == 0)


class TreeWriter:
    """Cuts share addresses, given in leaf order, into pages; ``emit(address, bytes)``
    receives each page as soon as it is complete, so only one partial page per level
    is ever held. :meth:`finish` returns ``(depth, entries)`` for the manifest."""

    def __init__(
        self,
        dataset_id: bytes,
        version: int,
        leaves_per_page: int,
        fanout: int,
        emit: Callable[[bytes, bytes], None],
    ) -> None:
        check_tree_parameters(leaves_per_page, fanout)
        self.dataset_id = dataset_id
        self.version = version
        self.leaves_per_page = leaves_per_page
        self.fanout = fanout
        self.emit = emit
        self.leaf_count = 0
        self._leaves: list[bytes] = []
        self._first = 0
        # levels[l]: (ref, first_leaf) of pages at level l not yet in a parent
        self._levels: list[list[tuple[PageRef, int]]] = [[]]
        self._finished = False

    def add(self, address: bytes) -> None:
        """Append one leaf (a 32-byte share address)."""
        if self._finished:
            raise ManifestError("a leaf was added after the page tree was finished")
        if len(address) != 32:
            raise ManifestError("a share address is 32 bytes")
        self._leaves.append(address)
        self.leaf_count += 1
        if len(self._leaves) == self.leaves_per_page:
            self._flush_leaves()

    def _flush_leaves(self) -> None:
        raw = encode_page(self.dataset_id, self.version, 0, self._first, self._leaves)
        ref = PageRef(hashlib.sha256(raw).digest(), page_root(0, self._leaves))
        self.emit(ref.address, raw)
        self._push(0, ref, self._first)
        self._first += len(self._leaves)
        self._leaves = []

    def _push(self, level: int, ref: PageRef, first_leaf: int) -> None:
        if len(self._levels) == level:
            self._levels.append([])
        if len(self._levels[level]) == self.fanout:
            # A full group gets its parent only once a later page exists: a top
            # level of exactly ``fanout`` entries stays in the manifest.
            self._group(level)
        self._levels[level].append((ref, first_leaf))

    def _group(self, level: int) -> None:
        group = self._levels[level]
        self._levels[level] = []
        items = [ref.address + ref.root for ref, _ in group]
        first = group[0][1]
        raw = encode_page(self.dataset_id, self.version, level + 1, first, items)
        ref = PageRef(hashlib.sha256(raw).digest(), page_root(level + 1, items))
        self.emit(ref.address, raw)
        self._push(level + 1, ref, first)

    def finish(self) -> tuple[int, tuple[PageRef, ...]]:
        """Flush the partial pages; returns the depth and the top level's entries."""
        if self._finished:
            raise ManifestError("the page tree was already finished")
        self._finished = True
        if self._leaves or self.leaf_count == 0:
            self._flush_leaves()
        level = 0
        while level < len(self._levels) - 1:
            if self._levels[level]:
                self._group(level)
            level += 1
        top = self._levels[-1]
        if len(self._levels) > MAX_DEPTH:
            raise ManifestError(f"{self.leaf_count} leaves need more than {MAX_DEPTH} page levels")
        return len(self._levels), tuple(ref for ref, _ in top)


def _node_path(nodes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of ``nodes[index]`` in the RFC 6962 tree over already-hashed
    nodes (an unpaired last node is promoted, as :class:`MerkleTree` does)."""
    path = []
    level = list(nodes)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        index >>= 1
    return path


def _child_slot(
    tree: PageTree, refs: Sequence[PageRef], level: int, first: int, total: int, leaf: int
) -> tuple[int, _Slot]:
    size = span(level, tree.leaves_per_page, tree.fanout)
    index = (leaf - first) // size
    return index, _slots(tree, refs, level, first, total)[index]


def leaf_proof_sync(tree: PageTree, leaf: int, fetch: FetchSync) -> tuple[bytes, MerkleProof]:
    """The share address at ``leaf`` and its audit path to the dataset root, read
    through the pages (one per level) with ``fetch``: the path within its leaf
    page, then within each index page, then among the manifest's entries."""
    if not 0 <= leaf < tree.leaf_count:
        raise IntegrityError(f"leaf {leaf} is outside a tree of {tree.leaf_count} leaves")
    segments: list[list[bytes]] = []
    refs: Sequence[PageRef] = tree.entries
    level, first, total = tree.depth - 1, 0, tree.leaf_count
    while True:
        index, slot = _child_slot(tree, refs, level, first, total, leaf)
        segments.append(_node_path([r.root for r in refs], index))
        page = fetch(slot.ref, slot.level, slot.first_leaf, slot.count)
        if level == 0:
            leaves = page.leaves()
            at = leaf - slot.first_leaf
            tree_in_page = MerkleTree([leaves[i : i + 32] for i in range(0, len(leaves), 32)])
            segments.append(list(tree_in_page.proof(at).path))
            address = bytes(leaves[32 * at : 32 * at + 32])
            break
        refs, level, first, total = page.children(), level - 1, slot.first_leaf, slot.count
    path = [h for segment in reversed(segments) for h in segment]
    return address, MerkleProof(leaf, tree.leaf_count, tuple(path))


async def leaf_proof(tree: PageTree, leaf: int, fetch: Fetch) -> tuple[bytes, MerkleProof]:
    """:func:`leaf_proof_sync` with an asynchronous fetch."""
    pages: dict[tuple[int, int], VerifiedPage] = {}
    refs: Sequence[PageRef] = tree.entries
    level, first, total = tree.depth - 1, 0, tree.leaf_count
    if not 0 <= leaf < tree.leaf_count:
        raise IntegrityError(f"leaf {leaf} is outside a tree of {tree.leaf_count} leaves")
    while True:
        _, slot = _child_slot(tree, refs, level, first, total, leaf)
        page = await fetch(slot.ref, slot.level, slot.first_leaf, slot.count)
        pages[(slot.level, slot.first_leaf)] = page
        if level == 0:
            break
        refs, level, first, total = page.children(), level - 1, slot.first_leaf, slot.count
    return leaf_proof_sync(tree, leaf, lambda ref, lv, f, c: pages[(lv, f)])
