"""StoredDatasets through its DatasetSource: the compute node asks the source only for a
dataset's compute offer and its bytes, and turns every other answer into a refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from datagora.compute.errors import JobRefused
from datagora.compute.stored import ComputeOffer, StoredDatasets
from datagora.crypto.keys import Identity
from datagora.errors import DatagoraError
from datagora.ledger import Ledger
from helpers import OTHER, OWNER, publish


class FakeSource:
    """A source with fixed answers; `broken` makes its metadata unreadable."""

    def __init__(self, offer: ComputeOffer | None, broken: bool = False) -> None:
        self.offer, self.broken = offer, broken
        self.fetched: list[bytes] = []

    def compute_offer(self, dataset: int) -> ComputeOffer | None:
        if self.broken:
            raise DatagoraError("metadata hash mismatch")
        return self.offer

    def fetch(self, manifest_hash: bytes, dest: Path) -> None:
        self.fetched.append(manifest_hash)
        dest.write_bytes(b"age,label\n1,0\n")


def _stored(ledger: Ledger, source: FakeSource, who: object = OWNER) -> StoredDatasets:
    operator = Identity.from_private_key(bytes(who.key))  # type: ignore[attr-defined]
    return StoredDatasets(ledger, operator, source, epsilon_budget=2.0)


def test_describe_and_fetch_through_the_source(embedded_ledger: Ledger, tmp_path: Path) -> None:
    dataset = publish(embedded_ledger).dataset
    source = FakeSource(ComputeOffer(service_id=1, differential_privacy=True))
    stored = _stored(embedded_ledger, source)
    pinned = stored.describe(dataset)
    assert (pinned.dataset, pinned.service_id, pinned.differential_privacy) == (dataset, 1, True)
    assert pinned.epsilon_budget == 2.0
    path = stored.fetch(pinned, tmp_path)
    assert source.fetched == [pinned.manifest_hash]
    assert path.name == f"dataset-{dataset}.csv"


def test_refusals(embedded_ledger: Ledger) -> None:
    dataset = publish(embedded_ledger).dataset
    with pytest.raises(JobRefused, match="offers no compute service"):
        _stored(embedded_ledger, FakeSource(None)).describe(dataset)
    with pytest.raises(JobRefused, match="metadata cannot be read: metadata hash mismatch"):
        _stored(embedded_ledger, FakeSource(None, broken=True)).describe(dataset)
    # Another account's node does not compute on the dataset, whatever the source says.
    offer = ComputeOffer(service_id=1, differential_privacy=False)
    with pytest.raises(JobRefused, match="does not compute on dataset"):
        _stored(embedded_ledger, FakeSource(offer), OTHER).describe(dataset)
