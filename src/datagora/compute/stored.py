"""Datasets a compute node reads the way their owner does: from the storage nodes.

The node's operator account is the dataset's controller, so its own identity unwraps
the data key in the manifest. What the node reads comes from a :class:`DatasetSource`
(the market layer's :class:`~datagora.market.compute.OwnerDatasets`, wired in by the
node layer), so that compute does not depend on the market. At admission a job is
pinned to the dataset's current version (its manifest hash on chain); when it runs,
that version is fetched, verified and decrypted into a private temporary directory
(mode 0700) that is removed afterwards whatever happens.

Which service is the compute service, and whether differential privacy is required,
is read from the dataset's public metadata (the ``compute`` service entry), checked
against its on-chain hash by the source.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from datagora.compute.errors import JobRefused
from datagora.crypto.keys import Identity
from datagora.errors import DatagoraError
from datagora.ledger import Ledger

__all__ = ["ComputeOffer", "DatasetSource", "StoredDataset", "StoredDatasets", "private_dir"]

_SNIFF = 64 * 1024


@dataclass(frozen=True, slots=True)
class ComputeOffer:
    """A dataset's compute service, as its checked metadata lists it."""

    service_id: int
    differential_privacy: bool


class DatasetSource(Protocol):
    """Where a compute node reads its operator's published datasets from."""

    def compute_offer(self, dataset: int) -> ComputeOffer | None:
        """The dataset's compute service (from its metadata, checked against the chain),
        None if it offers none; a :class:`DatagoraError` if the metadata cannot be read."""
        ...

    def fetch(self, manifest_hash: bytes, dest: Path) -> None:
        """Fetch, verify and decrypt the version whose manifest hash is `manifest_hash`
        into the file `dest`, as the dataset's owner."""
        ...


@dataclass(frozen=True, slots=True)
class StoredDataset:
    """One published dataset version as a job is pinned to it."""

    dataset: int
    version: int
    manifest_hash: bytes
    service_id: int
    differential_privacy: bool
    epsilon_budget: float
    """The dataset's DP budget, shared by every consumer."""
    consumer_budget: float = 0.0
    """What one consumer may spend of it (0: no cap)."""


def _suffix(head: bytes) -> str:
    """A file name suffix for the decrypted data, so algorithms get ``inputs[d].frame``."""
    if head.startswith(b"PAR1"):
        return ".parquet"
    try:
        first = head.decode("utf-8").split("\n", 1)[0]
    except UnicodeDecodeError:
        return ".bin"
    if "\t" in first:
        return ".tsv"
    return ".csv" if "," in first else ".bin"


class StoredDatasets:
    """Every dataset the node's operator controls, read from `source` on demand."""

    def __init__(
        self,
        ledger: Ledger,
        operator: Identity,
        source: DatasetSource,
        *,
        epsilon_budget: float = 3.0,
        consumer_budget: float = 0.0,
    ) -> None:
        self.ledger = ledger
        self.operator = operator
        self.epsilon_budget = epsilon_budget
        self.consumer_budget = consumer_budget
        self.source = source

    def describe(self, dataset: int) -> StoredDataset:
        """The dataset's current version and compute policy, or :class:`JobRefused`."""
        try:
            info = self.ledger.data_nft.get_dataset(dataset)
        except DatagoraError:
            raise JobRefused(f"there is no dataset {dataset}", 404) from None
        if info.controller != self.operator.address:
            raise JobRefused(
                f"this node does not compute on dataset {dataset} (its operator does not "
                "control it)",
                404,
            )
        if info.manifest_hash == bytes(32):
            raise JobRefused(f"dataset {dataset} has no stored data", 404)
        try:
            offer = self.source.compute_offer(dataset)
        except DatagoraError as exc:
            raise JobRefused(f"dataset {dataset}'s metadata cannot be read: {exc}", 503) from None
        if offer is None:
            raise JobRefused(f"dataset {dataset} offers no compute service", 404)
        return StoredDataset(
            dataset,
            info.version,
            info.manifest_hash,
            offer.service_id,
            offer.differential_privacy,
            self.epsilon_budget if offer.differential_privacy else 0.0,
            self.consumer_budget if offer.differential_privacy else 0.0,
        )

    def fetch(self, pinned: StoredDataset, folder: Path) -> Path:
        """Fetch, verify and decrypt `pinned` into `folder`; the plaintext file's path."""
        raw = folder / "data"
        self.source.fetch(pinned.manifest_hash, raw)
        with open(raw, "rb") as f:
            head = f.read(_SNIFF)
        return raw.rename(folder / f"dataset-{pinned.dataset}{_suffix(head)}")


@contextlib.contextmanager
def private_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh directory (mode 0700) under `parent`, removed when the block ends."""
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
