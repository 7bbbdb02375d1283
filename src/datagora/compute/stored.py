"""Datasets a compute node reads the way their owner does: from the storage nodes.

The node's operator account is the dataset's controller, so its own identity unwraps
the data key in the manifest (:meth:`datagora.market.Marketplace.owner_download`).
At admission a job is pinned to the dataset's current version (its manifest hash on
chain); when it runs, that version is fetched, verified and decrypted into a private
temporary directory (mode 0700) that is removed afterwards whatever happens.

Which service is the compute service, and whether differential privacy is required,
is read from the dataset's public metadata (the ``compute`` service entry), checked
against its on-chain hash.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datagora.compute.errors import JobRefused
from datagora.crypto.keys import Identity
from datagora.errors import DatagoraError
from datagora.ledger import Ledger

__all__ = ["StoredDataset", "StoredDatasets", "private_dir"]

_SNIFF = 64 * 1024


@dataclass(frozen=True, slots=True)
class StoredDataset:
    """One published dataset version as a job is pinned to it."""

    dataset: int
    version: int
    manifest_hash: bytes
    service_id: int
    differential_privacy: bool
    epsilon_budget: float


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
    """Every dataset the node's operator controls, read from `storage` nodes on demand."""

    def __init__(
        self,
        ledger: Ledger,
        operator: Identity,
        storage: list[str],
        *,
        epsilon_budget: float = 3.0,
    ) -> None:
        from datagora.market import Endpoints, Marketplace

        if not storage:
            raise DatagoraError("a compute node that reads stored datasets needs storage nodes")
        self.operator = operator
        self.epsilon_budget = epsilon_budget
        self.market = Marketplace(ledger, Endpoints(list(storage)), operator)

    def describe(self, dataset: int) -> StoredDataset:
        """The dataset's current version and compute policy, or :class:`JobRefused`."""
        ledger = self.market.ledger
        try:
            info = ledger.data_nft.get_dataset(dataset)
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
            meta = self.market.metadata(dataset)
        except DatagoraError as exc:
            raise JobRefused(f"dataset {dataset}'s metadata cannot be read: {exc}", 503) from None
        compute = [s for s in meta.services if s.type == "compute"]
        if not compute:
            raise JobRefused(f"dataset {dataset} offers no compute service", 404)
        service = compute[0]
        return StoredDataset(
            dataset,
            info.version,
            info.manifest_hash,
            service.id,
            service.differential_privacy,
            self.epsilon_budget if service.differential_privacy else 0.0,
        )

    def fetch(self, pinned: StoredDataset, folder: Path) -> Path:
        """Fetch, verify and decrypt `pinned` into `folder`; the plaintext file's path."""
        raw = folder / "data"
        self.market.owner_download(pinned.manifest_hash, raw)
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
