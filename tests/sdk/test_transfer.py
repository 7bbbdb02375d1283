"""Giving a dataset to another account, end to end in an embedded network: the data key
is left on chain for the recipient, nothing sells until the recipient re-keys, and then
a buyer of the new holder reads the data through the new holder's agent."""

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
