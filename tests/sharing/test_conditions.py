"""Access conditions (issue 17, item 5): the grammar and the on-chain format, and a
condition-gated dataset that opens only while its condition holds, on the embedded chain."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datagora.ledger import Ledger, ListKind
from datagora.ledger import conditions as cond
from datagora.ledger.errors import ContractRuleError, InvalidArgument
from datagora.sharing.gate import AccessGate
from helpers import BUYER, DEPLOYER, OTHER, OWNER, fund, publish

TOKEN = "0x00000000000000000000000000000000000000AA"


def test_the_grammar_parses_renders_and_round_trips() -> None:
    c = cond.parse(f"order AND (erc20:{TOKEN} >= 100 OR before:2027-01-01)")
    assert c == cond.AllOf(
        (cond.Order(), cond.AnyOf((cond.Erc20(TOKEN, 100), cond.NotAfter(1798761600))))
    )
    assert cond.render(c) == f"order AND (erc20:{TOKEN}>=100 OR before:2027-01-01)"
    assert cond.decode(cond.encode(c)) == c
    # AND binds tighter than OR; nested ANDs flatten; words are case-blind.
    assert cond.parse("a:1 or b:2".replace("a:1", "allowlist").replace("b:2", "order")) == (
        cond.AnyOf((cond.AllowList(), cond.Order()))
    )
    assert cond.parse("order and allowlist AND (after:2026-01-01T12:00:00Z)") == cond.AllOf(
        (cond.Order(), cond.AllowList(), cond.NotBefore(1767268800))
    )
    assert cond.parse(f"erc721:{TOKEN}#7") == cond.Erc721(TOKEN, 7)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("order AND", "ends too early"),
        ("(order OR allowlist", "ends too early"),
        ("order)", "unexpected"),
        ("everyone", "unknown term"),
        ("before:soon", "not a date"),
        ("erc20:0x1234>=5", "unknown term"),
        (f"erc20:{TOKEN}>=0", "between 1"),
        (" AND ".join(["order"] * 9), "at most 8"),
        (
            "((((((order AND allowlist) OR order) AND allowlist) OR order) AND allowlist)"
            " OR order)",
            "deeper",
        ),
    ],
)
def test_a_malformed_condition_is_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        cond.parse(text)


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x02\x01", b"\x01", b"\x01\x09", b"\x01\x01\x01", b"\x01\x10\x02\x01", b"\x01\x03\x00"],
)
def test_a_malformed_encoding_does_not_decode(blob: bytes) -> None:
    with pytest.raises(InvalidArgument):
        cond.decode(blob)


_leaf = st.one_of(
    st.just(cond.Order()),
    st.just(cond.AllowList()),
    st.builds(cond.NotBefore, st.integers(1, 2**64 - 1)),
    st.builds(cond.NotAfter, st.integers(1, 2**64 - 1)),
    st.builds(cond.Erc20, st.just(TOKEN), st.integers(1, 2**256 - 1)),
    st.builds(cond.Erc721, st.just(TOKEN), st.none() | st.integers(0, 2**256 - 1)),
)
_tree = st.recursive(
    _leaf,
    lambda kids: (
        st.builds(cond.AllOf, st.tuples(kids, kids)) | st.builds(cond.AnyOf, st.tuples(kids, kids))
    ),
    max_leaves=8,
)


@given(_tree)
def test_every_tree_within_the_limits_round_trips(tree: cond.Condition) -> None:
    try:
        blob = cond.encode(tree)
    except InvalidArgument:
        return  # over a limit: refused, which is the point
    assert cond.decode(blob) == tree
    assert cond.encode(cond.parse(cond.render(tree))) == cond.encode(cond._flatten(tree))


def _grant_nothing(ledger: Ledger) -> tuple[AccessGate, int]:
    return AccessGate(ledger), publish(ledger).dataset


def test_a_time_window_opens_and_closes_the_dataset(embedded_ledger: Ledger) -> None:
    ledger = embedded_ledger
    gate, ds = _grant_nothing(ledger)
    fund(ledger, BUYER.address)
    ledger.exchange.buy_and_order(BUYER, ds, ledger.datatoken(ds))
    assert gate.check(ds, BUYER.address).allowed
    now = ledger.chain.timestamp()
    ledger.access.set_condition(
        OWNER,
        ds,
        0,
        cond.AllOf((cond.Order(), cond.NotBefore(now + 3600), cond.NotAfter(now + 7200))),
    )
    refused = gate.check(ds, BUYER.address)
    assert refused.code == "condition_failed" and "not open before" in refused.detail
    ledger.chain.advance_time(3700)
    assert gate.check(ds, BUYER.address).allowed
    # The order alone does not open it for someone else, in the window or not.
    assert "order (no valid order or grant)" in gate.check(ds, OTHER.address).detail
    ledger.chain.advance_time(3600)
    refused = gate.check(ds, BUYER.address)
    assert refused.code == "condition_failed" and "closed since" in refused.detail


def test_a_token_gated_dataset_opens_while_the_consumer_holds_the_token(
    embedded_ledger: Ledger,
) -> None:
    ledger = embedded_ledger
    gate, ds = _grant_nothing(ledger)
    token = ledger.market_token
    # No order needed: 100 units of the ERC-20 OR any dataset NFT (the DataNFT is an ERC-721).
    text = f"erc20:{token.address}>=100 OR erc721:{ledger.data_nft.address}"
    ledger.access.set_condition(OWNER, ds, 0, text)
    assert ledger.access.condition_of(ds, 0) == cond.parse(text)
    refused = gate.check(ds, BUYER.address)
    assert refused.code == "condition_failed"
    assert "holds 0, needs 100" in refused.detail and "holds no such NFT" in refused.detail
    token.mint(DEPLOYER, BUYER.address, 100)
    assert gate.check(ds, BUYER.address).allowed
    token.transfer(BUYER, OTHER.address, 1)  # 99 left: closed again
    assert not gate.check(ds, BUYER.address).allowed
    own = publish(ledger, owner=BUYER).dataset  # now BUYER holds an NFT of the collection
    assert gate.check(ds, BUYER.address).allowed
    # One NFT by id: only its holder opens, and a token id that does not exist holds for nobody.
    ledger.access.set_condition(OWNER, ds, 0, f"erc721:{ledger.data_nft.address}#{own}")
    assert gate.check(ds, BUYER.address).allowed
    assert "does not own NFT" in gate.check(ds, OTHER.address).detail
    ledger.access.set_condition(OWNER, ds, 0, f"erc721:{ledger.data_nft.address}#{own + 99}")
    assert not gate.check(ds, BUYER.address).allowed
    # A token address without code fails its term, it does not break the check.
    ledger.access.set_condition(OWNER, ds, 0, f"erc20:{TOKEN}>=1 OR allowlist")
    assert "could not be read" in gate.check(ds, BUYER.address).detail
    ledger.access.set_list(OWNER, ds, BUYER.address, ListKind.ALLOW)
    assert gate.check(ds, BUYER.address).allowed
    # The deny-list refuses whatever the condition says.
    ledger.access.set_list(OWNER, ds, BUYER.address, ListKind.DENY)
    assert gate.check(ds, BUYER.address).code == "deny_listed"


def test_and_or_combinations_and_the_async_path(embedded_ledger: Ledger) -> None:
    import asyncio

    ledger = embedded_ledger
    gate, ds = _grant_nothing(ledger)
    token = ledger.market_token
    later = ledger.chain.timestamp() + 86_400
    ledger.access.set_condition(
        OWNER, ds, 0, f"allowlist AND (erc20:{token.address}>=5 OR after:{later})"
    )
    ledger.access.set_list(OWNER, ds, BUYER.address, ListKind.ALLOW)
    refused = asyncio.run(gate.check_async(ds, BUYER.address))
    assert refused.code == "condition_failed" and "none of:" in refused.detail
    token.mint(DEPLOYER, BUYER.address, 5)
    assert asyncio.run(gate.check_async(ds, BUYER.address)).allowed
    token.transfer(BUYER, OTHER.address, 5)
    assert not gate.check(ds, BUYER.address).allowed
    ledger.chain.advance_time(86_401)  # the other branch of the OR
    assert asyncio.run(gate.check_async(ds, BUYER.address)).allowed
    token.mint(DEPLOYER, OTHER.address, 5)
    assert "allowlist (not on the allow-list)" in gate.check(ds, OTHER.address).detail
    # Clearing the condition restores the order/grant rule.
    ledger.access.set_condition(OWNER, ds, 0, None)
    assert ledger.access.condition_of(ds, 0) is None
    assert gate.check(ds, OTHER.address).code == "no_order"
    assert gate.check(ds, BUYER.address).allowed  # allow-listed


def test_only_the_controller_sets_a_condition_and_a_bad_one_stores_nothing(
    embedded_ledger: Ledger,
) -> None:
    ledger = embedded_ledger
    ds = publish(ledger).dataset
    with pytest.raises(ContractRuleError, match="not controller"):
        ledger.access.set_condition(BUYER, ds, 0, "allowlist")
    block = ledger.chain.block_number
    with pytest.raises(InvalidArgument):
        ledger.access.set_condition(OWNER, ds, 0, "order AND (allowlist")
    assert ledger.chain.block_number == block
    assert ledger.access.condition_blob(ds, 0) == b""
    # The contract itself refuses an unknown format version.
    with pytest.raises(ContractRuleError, match="unknown condition format"):
        ledger.access._transact(OWNER, "set_condition", ds, 0, b"\x07\x01")
    # Bytes of the right version that do not decode are refused by the proxies.
    ledger.access._transact(OWNER, "set_condition", ds, 0, b"\x01\x99")
    assert AccessGate(ledger).check(ds, BUYER.address).code == "condition_unreadable"
    # Conditions are per service.
    ledger.access.set_condition(OWNER, ds, 1, "allowlist")
    assert ledger.access.condition_of(ds, 1) == cond.AllowList()


@pytest.mark.anvil
def test_conditions_through_the_view_batch_on_anvil(_anvil_ledger: Ledger) -> None:
    """On a node the condition's reads go through ViewBatch (padded to two words); a read
    that reverts there (an NFT id that does not exist) fails its term alone."""
    import asyncio

    from datagora.ledger.views import CallCoalescer

    ledger = _anvil_ledger
    snapshot = ledger.chain.snapshot()
    try:
        gate, ds = _grant_nothing(ledger)
        assert isinstance(gate.views, CallCoalescer) and gate.views.view_batch
        token, nft = ledger.market_token.address, ledger.data_nft.address
        ledger.access.set_condition(OWNER, ds, 0, f"erc20:{token}>=7 OR erc721:{nft}#{ds + 50}")

        def check(who: str) -> tuple[bool, str]:
            d = asyncio.run(gate.check_async(ds, who))
            return d.allowed, d.detail

        allowed, detail = check(BUYER.address)
        assert not allowed and "holds 0, needs 7" in detail and "could not be read" in detail
        ledger.market_token.mint(DEPLOYER, BUYER.address, 7)
        assert check(BUYER.address)[0] and not check(OTHER.address)[0]
        ledger.access.set_condition(OWNER, ds, 0, f"erc721:{nft}#{ds}")
        assert not check(BUYER.address)[0] and check(OWNER.address)[0]  # OWNER holds it
    finally:
        ledger.chain.revert(snapshot)
