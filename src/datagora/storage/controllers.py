"""Who controls a stored dataset version, from the ledger: the node's
:class:`~datagora.storage.auth.Controllers` when it reads a chain.

A manifest hash becomes a dataset through the ``DatasetCreated`` and
``DatasetUpdated`` events (read incrementally, as the retention sweep reads
them); the dataset's controller is its data NFT's holder or an operator the
holder approved for all its tokens (``DataNFT.may_control``).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Final

from datagora.storage.retention import OnChainReferences

if TYPE_CHECKING:
    from datagora.ledger import Ledger

__all__ = ["LedgerControllers"]

_REFRESH_EVERY: Final = 1.0


class LedgerControllers:
    """:class:`~datagora.storage.auth.Controllers` read from ``ledger``."""

    def __init__(self, ledger: Ledger, refresh_every: float = _REFRESH_EVERY) -> None:
        self.ledger = ledger
        self.references = OnChainReferences.of(ledger)
        self.refresh_every = refresh_every
        self._lock = threading.Lock()
        self._refreshed = float("-inf")

    def dataset_of(self, manifest_hash: bytes) -> int | None:
        """The dataset whose version ``manifest_hash`` is, or None if none is recorded."""
        with self._lock:
            found = self.references.datasets.get(manifest_hash)
            if found is None and time.monotonic() - self._refreshed >= self.refresh_every:
                self.references.refresh()
                self._refreshed = time.monotonic()
                found = self.references.datasets.get(manifest_hash)
            return found

    def may_control(self, manifest_hash: bytes, account: str) -> bool | None:
        """See :meth:`datagora.storage.auth.Controllers.may_control`."""
        dataset = self.dataset_of(manifest_hash)
        if dataset is None:
            return None
        return self.ledger.data_nft.may_control(dataset, account)
