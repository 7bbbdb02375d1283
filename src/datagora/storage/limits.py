"""The one manifest size limit, and what it means for the size of a dataset.

:data:`~datagora.storage.manifest.MAX_MANIFEST_BYTES` (64 MiB) is the one limit on
any manifest document, used by the uploader, by nodes (which parse manifests and
manifest pages up to it) and by the retention sweep. A dataset whose share
addresses fit one leaf page keeps a single-document manifest (format 3, at most
:func:`manifest_bound` bytes, a few MiB); a larger one is paged (format 4), its
documents bounded by the page parameters instead of the dataset's size
(:func:`tree_sizes`). Its placement record (version 2) still grows with the
dataset, by 2 bytes a share (8/3 in base64), so the largest dataset is the
smaller of what :data:`~datagora.storage.pages.MAX_DEPTH` levels of pages list
(2^43 shares at the defaults) and what a placement record within the limit
places (:data:`PLACEMENT_LEAVES`, 24,769,536 shares): :func:`max_dataset_bytes`,
4,328,785,936,384 bytes (~3.9 TiB) at the default 1 MiB chunks and 4-of-6. The
uploader refuses anything larger before storing a share. Pure arithmetic, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from datagora.storage.errors import DatasetTooLarge
from datagora.storage.manifest import MAX_MANIFEST_BYTES, chunk_count
from datagora.storage.pages import (
    DEFAULT_FANOUT,
    DEFAULT_LEAVES_PER_PAGE,
    PAGE_HEADER_SIZE,
    max_leaves,
    span,
    tree_depth,
)

__all__ = [
    "MAX_MANIFEST_BYTES",
    "MAX_PLAINTEXT_SIZE",
    "PLACEMENT_LEAVES",
    "PLACEMENT_NODES_BYTES",
    "DatasetTooLarge",
    "TreeSizes",
    "check_dataset_size",
    "manifest_bound",
    "max_chunks",
    "max_dataset_bytes",
    "tree_sizes",
]

# The manifest's plaintext_size field: 0 .. 2^63 - 1.
MAX_PLAINTEXT_SIZE: Final = 2**63 - 1
# Everything but the chunk list or page entries (format fields, sizes, Merkle
# root, the wrapped key with an Umbral capsule) stays well below this.
_FIXED_BYTES: Final = 8 * 1024
# A chunk's ciphertext is its plaintext plus at most this (AES-GCM tag, framing).
_CIPHERTEXT_SLACK: Final = 64
# {"address":"<64 hex>","root":"<64 hex>"} and its separating comma
_ENTRY_BYTES: Final = len('{"address":"","root":""},') + 128
# A version-2 placement record: fixed fields, the node list (the uploader refuses
# a longer one), then 2 bytes a share in base64.
PLACEMENT_NODES_BYTES: Final = 1024 * 1024
PLACEMENT_LEAVES: Final = (MAX_MANIFEST_BYTES - _FIXED_BYTES - PLACEMENT_NODES_BYTES) * 3 // 8


def _per_chunk(chunk_size: int, n: int) -> int:
    # {"ciphertext_size":N,"shares":["<64 hex>",...]} and its separating comma
    digits = len(str(chunk_size + _CIPHERTEXT_SLACK))
    return len('{"ciphertext_size":,"shares":[]},') + digits + n * (64 + 2) + (n - 1)


def manifest_bound(plaintext_size: int, chunk_size: int, n: int) -> int:
    """An upper bound of a single-document manifest's size (formats 2 and 3)."""
    return _FIXED_BYTES + chunk_count(plaintext_size, chunk_size) * _per_chunk(chunk_size, n)


def max_chunks(
    n: int, leaves_per_page: int = DEFAULT_LEAVES_PER_PAGE, fanout: int = DEFAULT_FANOUT
) -> int:
    """The most chunks a manifest's page tree lists and its placement record places."""
    return min(max_leaves(leaves_per_page, fanout), PLACEMENT_LEAVES) // n


def max_dataset_bytes(
    chunk_size: int,
    n: int,
    leaves_per_page: int = DEFAULT_LEAVES_PER_PAGE,
    fanout: int = DEFAULT_FANOUT,
) -> int:
    """The largest dataset (plaintext bytes) a manifest can describe."""
    return min(max_chunks(n, leaves_per_page, fanout) * chunk_size, MAX_PLAINTEXT_SIZE)


@dataclass(frozen=True)
class TreeSizes:
    """The documents of one dataset's manifest, from its parameters alone."""

    leaves: int
    paged: bool
    depth: int
    leaf_pages: int
    index_pages: int
    manifest_bytes: int
    """An upper bound of the manifest document itself."""
    largest_page_bytes: int
    placement_bytes: int
    """An upper bound of the upload's placement record (few nodes)."""


def tree_sizes(
    plaintext_size: int,
    chunk_size: int,
    n: int,
    leaves_per_page: int = DEFAULT_LEAVES_PER_PAGE,
    fanout: int = DEFAULT_FANOUT,
) -> TreeSizes:
    """How a dataset's manifest is laid out: single-document while its share
    addresses fit one leaf page, else a page tree (the uploader's switch)."""
    leaves = chunk_count(plaintext_size, chunk_size) * n
    if leaves <= leaves_per_page:
        # version 1: "<64 hex>":["<location>"], about 100 bytes a share
        return TreeSizes(
            leaves, False, 0, 0, 0, manifest_bound(plaintext_size, chunk_size, n), 0,
            _FIXED_BYTES + 100 * leaves,
        )  # fmt: skip
    depth = tree_depth(leaves, leaves_per_page, fanout)
    pages = [-(-leaves // span(level, leaves_per_page, fanout)) for level in range(depth)]
    top = -(-leaves // span(depth - 1, leaves_per_page, fanout))
    largest = PAGE_HEADER_SIZE + max(
        32 * min(leaves, leaves_per_page), 64 * fanout if depth > 1 else 0
    )
    return TreeSizes(
        leaves, True, depth, pages[0], sum(pages[1:]), _FIXED_BYTES + top * _ENTRY_BYTES, largest,
        _FIXED_BYTES + PLACEMENT_NODES_BYTES + 4 * -(-2 * leaves // 3),
    )  # fmt: skip


def too_large(
    plaintext_size: int,
    chunk_size: int,
    k: int,
    n: int,
    outcome: str = "Nothing was uploaded",
    leaves_per_page: int = DEFAULT_LEAVES_PER_PAGE,
    fanout: int = DEFAULT_FANOUT,
) -> str:
    """The error message for a dataset over the limit."""
    most = max_dataset_bytes(chunk_size, n, leaves_per_page, fanout)
    return (
        f"a dataset of {plaintext_size} bytes is too large at chunk size {chunk_size} "
        f"({k}-of-{n}): its manifest's page tree ({leaves_per_page} share addresses per "
        f"page, fanout {fanout}, 2 levels) and its placement record ({MAX_MANIFEST_BYTES} "
        f"bytes at most) hold at most {min(max_leaves(leaves_per_page, fanout), PLACEMENT_LEAVES)} "
        f"shares, so a dataset can be at most {most} bytes (~{most / 2**40:.1f} TiB) at this "
        f"chunk size; use a larger chunk size. {outcome}"
    )


def check_dataset_size(
    plaintext_size: int,
    chunk_size: int,
    k: int,
    n: int,
    leaves_per_page: int = DEFAULT_LEAVES_PER_PAGE,
    fanout: int = DEFAULT_FANOUT,
) -> None:
    """Raise :class:`DatasetTooLarge` if the dataset's manifest cannot list it."""
    if plaintext_size > max_dataset_bytes(chunk_size, n, leaves_per_page, fanout):
        raise DatasetTooLarge(
            too_large(plaintext_size, chunk_size, k, n, "Nothing was uploaded",
                      leaves_per_page, fanout)
        )  # fmt: skip
