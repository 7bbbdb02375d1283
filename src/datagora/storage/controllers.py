"""Who controls a stored dataset version, from the ledger: the node's
:class:`~datagora.storage.auth.Controllers` when it reads a chain.

A manifest hash becomes a dataset through the ``DatasetCreated`` and
``DatasetUpdated`` events (read incrementally, as the retention sweep reads
them); the dataset's controller is its data NFT's holder or an operator the
holder approved for all its tokens (``DataNFT.may_control``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from datagora.storage.retention import OnChainReferences

if TYPE_CHECKING:
    from datagora.ledger import Ledger

__all__ = ["LedgerControllers"]


class LedgerControllers:
    """:class:`~datagora.storage.auth.Controllers` read from ``ledger``."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.references = OnChainReferences.of(ledger)
        self._lock = threading.Lock()

    def dataset_of(self, manifest_hash: bytes) -> int | None:
        """The dataset whose version ``manifest_hash`` is, or None if none is recorded.

        A manifest not known yet makes it read the blocks since the last read (one
        call when there are none): a version published a moment ago is never
        mistaken for an unpublished one."""
        with self._lock:
            found = self.references.datasets.get(manifest_hash)
            if found is None:
                self.references.refresh()
                found = self.references.datasets.get(manifest_hash)
            return found

    def may_control(self, manifest_hash: bytes, account: str) -> bool | None:
        """See :meth:`datagora.storage.auth.Controllers.may_control`."""
        dataset = self.dataset_of(manifest_hash)
        if dataset is None:
            return None
        return self.ledger.data_nft.may_control(dataset, account)
