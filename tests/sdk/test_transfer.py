"""Fair-exchange lifecycles end to end in an embedded network, through the SDK.

Giving a dataset to another account: the data key is left on chain for the recipient,
nothing sells until the recipient re-keys, and then a buyer of the new holder reads the
data through the new holder's agent. Jobs paid one by one through the escrow."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import datagora as dg
from datagora.crypto.keys import export_public
from datagora.errors import ConfigError
from datagora.ledger import DatasetState, Pricing
from datagora.ledger.errors import InvalidState

pytestmark = pytest.mark.slow
TOKEN = 10**18


def test_transfer_then_rekey_by_the_new_holder(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})
    source = tmp_path / "small.csv"
    frame.to_csv(source, index=False)
    meta = {"title": "Handed over", "license": "CC-BY-4.0", "creator": "first owner"}
    with dg.connect(embedded=True) as owner:
        heir, buyer, late = owner.account(3), owner.account(2), owner.account(4)
        published = owner.publish(source, meta, pricing=Pricing.FIXED, price=TOKEN)
        d = published.dataset
        buyer.dataset(d).buy_and_order()
        pd.testing.assert_frame_equal(buyer.dataset(d).to_pandas(), frame, check_dtype=False)
        # Only the holder may give it; the recipient's public record names its key.
        with pytest.raises(ConfigError, match="do not hold"):
            heir.dataset(d).transfer(export_public(buyer.identity))
        handover = owner.dataset(d).transfer(export_public(heir.identity))
        assert handover.recipient == heir.identity.address and handover.key_record > 0
        assert heir.dataset_info(d).state == DatasetState.AWAITING_REKEY
        # Until the re-key nothing sells, and no token moves.
        balance = late.ledger.market_token.balance_of(late.identity.address)
        with pytest.raises(InvalidState, match="not active"):
            late.dataset(d).buy_and_order()
        assert late.ledger.market_token.balance_of(late.identity.address) == balance
        # Someone else cannot re-key it with a key that was not left for them.
        with pytest.raises(ConfigError, match="do not hold"):
            buyer.rekey(d)
        heir.dataset(d).rekey()
        info = heir.dataset_info(d)
        assert (info.state, info.controller, info.version) == (
            DatasetState.ACTIVE,
            heir.identity.address,
            2,
        )
        assert heir.metadata(d).publisher_keys.umbral_public_key == (  # type: ignore[union-attr]
            heir.identity.umbral_public_key.hex()
        )
        # A new buyer pays the new holder and reads through the new holder's agent.
        earned = heir.ledger.market_token.balance_of(heir.identity.address)
        late.dataset(d).buy_and_order()
        assert heir.ledger.market_token.balance_of(heir.identity.address) > earned
        pd.testing.assert_frame_equal(late.dataset(d).to_pandas(), frame, check_dtype=False)
        # The heir rotates to a fresh key the first owner never knew, and gives it back
        # the whole way in one call (a Market as the recipient re-keys too).
        heir.rotate(d)
        done = heir.dataset(d).transfer(owner)
        assert done["rekey_tx"].gas_used > 0
        assert owner.dataset_info(d).state == DatasetState.ACTIVE
        pd.testing.assert_frame_equal(owner.dataset(d).to_pandas(), frame, check_dtype=False)


COUNT = """
import json

def run(inputs, params, output_dir):
    (item,) = inputs.values()
    (output_dir / "count.json").write_text(json.dumps({"rows": len(item.frame)}))
"""


def test_jobs_paid_one_by_one_through_the_escrow(tmp_path: Path) -> None:
    """Market.price_jobs, then Market.compute locks the price per job: a succeeded job
    pays the owner (the result checked against the claim's hash), a cancelled one is
    refunded, from the consumer's side and from the owner's."""
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.0, 1.0, 0.0, 1.0]})
    source = tmp_path / "jobs.csv"
    frame.to_csv(source, index=False)
    meta = {
        "title": "Per-job compute",
        "license": "CC-BY-4.0",
        "creator": "owner",
        "columns": [{"name": "a", "type": "float"}, {"name": "b", "type": "float"}],
        "services": [{"id": 1, "type": "compute", "price": "0"}],
    }
    with dg.connect(embedded=True) as owner:
        researcher = owner.account(2)
        d = owner.publish(source, meta, pricing=Pricing.NONE).dataset
        owner.offer_compute(d, [COUNT])
        assert owner.price_jobs(d, 3 * TOKEN, 600) == (3 * TOKEN, 600)
        mt = owner.ledger.market_token
        start = mt.balance_of(researcher.identity.address)
        earned = mt.balance_of(owner.identity.address)
        job = researcher.compute(d, COUNT, {})
        assert job.wait(120)["state"] == "succeeded"
        escrow = job.escrow()
        assert escrow is not None and escrow.state.name == "PAID"
        files = job._handle.files(tmp_path / "out")  # checked against the on-chain hash
        assert b'"rows": 4' in files[0].read_bytes()
        assert mt.balance_of(owner.identity.address) == earned + 3 * TOKEN
        assert mt.balance_of(researcher.identity.address) == start - 3 * TOKEN
        # Untrusted code waits for review; the consumer withdraws it and is refunded.
        other = COUNT + "\n# reviewed\n"
        pending = researcher.compute(d, other, {})
        assert pending.status()["state"] == "pending"
        assert pending.cancel()["state"] == "cancelled"
        assert pending.escrow().state.name == "REFUNDED"  # type: ignore[union-attr]
        # The owner cancels another from its side.
        again = researcher.compute(d, other, {"n": 2})
        assert owner.cancel_job(again.job)["state"] == "cancelled"
        assert mt.balance_of(researcher.identity.address) == start - 3 * TOKEN
