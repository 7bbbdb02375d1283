"""The one manifest size limit, and what it means for the size of a dataset.

A manifest lists every share hash of a dataset version, so it grows with the
dataset. :data:`~datagora.storage.manifest.MAX_MANIFEST_BYTES` is the one limit
used everywhere: by the uploader (which refuses a dataset whose manifest would
exceed it before storing any share), by nodes (which parse manifests up to it)
and by the retention sweep (which keeps the shares of recorded manifests up to
it). :func:`manifest_bound` is an upper bound of a manifest's size from the
dataset's parameters; :func:`max_dataset_bytes` the largest dataset that fits.
Pure arithmetic, no I/O.
"""

from __future__ import annotations

from typing import Final

from datagora.storage.errors import DatasetTooLarge
from datagora.storage.manifest import MAX_MANIFEST_BYTES, chunk_count

__all__ = [
    "MAX_MANIFEST_BYTES",
    "DatasetTooLarge",
    "check_dataset_size",
    "manifest_bound",
    "max_chunks",
    "max_dataset_bytes",
]

# Everything but the chunk list (format fields, sizes, Merkle root, the wrapped
# key with an Umbral capsule) stays well below this.
_FIXED_BYTES: Final = 8 * 1024
# A chunk's ciphertext is its plaintext plus at most this (AES-GCM tag, framing).
_CIPHERTEXT_SLACK: Final = 64


def _per_chunk(chunk_size: int, n: int) -> int:
    # {"ciphertext_size":N,"shares":["<64 hex>",...]} and its separating comma
    digits = len(str(chunk_size + _CIPHERTEXT_SLACK))
    return len('{"ciphertext_size":,"shares":[]},') + digits + n * (64 + 2) + (n - 1)


def manifest_bound(plaintext_size: int, chunk_size: int, n: int) -> int:
    """An upper bound of the manifest's size for a dataset of ``plaintext_size`` bytes."""
    return _FIXED_BYTES + chunk_count(plaintext_size, chunk_size) * _per_chunk(chunk_size, n)


def max_chunks(chunk_size: int, n: int) -> int:
    """The most chunks a manifest within the limit can list."""
    return (MAX_MANIFEST_BYTES - _FIXED_BYTES) // _per_chunk(chunk_size, n)


def max_dataset_bytes(chunk_size: int, n: int) -> int:
    """The largest dataset (plaintext bytes) whose manifest fits the limit."""
    return max_chunks(chunk_size, n) * chunk_size


def too_large(
    plaintext_size: int,
    chunk_size: int,
    k: int,
    n: int,
    outcome: str = "Nothing was uploaded",
) -> str:
    """The error message for a dataset over the limit."""
    most = max_dataset_bytes(chunk_size, n)
    return (
        f"a dataset of {plaintext_size} bytes is too large for one manifest at chunk size "
        f"{chunk_size} ({k}-of-{n}): a manifest is limited to {MAX_MANIFEST_BYTES} bytes, so a "
        f"dataset can be at most {most} bytes (~{most / 2**30:.1f} GiB) at this chunk size; "
        f"use a larger chunk size (e.g. 4x as large holds 4x as much). {outcome}"
    )


def check_dataset_size(plaintext_size: int, chunk_size: int, k: int, n: int) -> None:
    """Raise :class:`DatasetTooLarge` if the dataset's manifest could exceed the limit."""
    if manifest_bound(plaintext_size, chunk_size, n) > MAX_MANIFEST_BYTES:
        raise DatasetTooLarge(too_large(plaintext_size, chunk_size, k, n))
