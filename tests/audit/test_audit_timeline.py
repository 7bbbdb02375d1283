"""The timeline of a story with every kind of event the ledger has today, on both backends."""

from __future__ import annotations

import pytest
from story import Story, tell

from datagora.audit import (
    DatasetNotFound,
    Kind,
    holders,
    render_timeline,
    timeline,
    timeline_lines,
    versions,
)
from datagora.audit.timeline import describe
from datagora.ledger import Event, Ledger
from helpers import BUYER, MARKET, ON_EVERY_NODE, OTHER, OWNER, h


@ON_EVERY_NODE
def test_story_timeline_has_every_kind_in_chain_order(ledger: Ledger) -> None:
    story = tell(ledger)
    entries = timeline(ledger, story.dataset)

    keys = [(e.block_number, e.log_index) for e in entries]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    kinds = [e.kind for e in entries]
    expected_order = [
        Kind.HOLDER,  # NFT minted to the owner
        Kind.CREATED,
        Kind.SERVICE,
        Kind.EXCHANGE,
        # buy_and_order records the order first (to learn the service's price in
        # datatokens), then takes the payment, in the same transaction.
        Kind.MINT,
        Kind.BURN,
        Kind.ORDER,
        Kind.SALE,
        Kind.MINT,
        Kind.TRANSFER,
        Kind.BURN,
        Kind.ORDER,
        Kind.PRICE,
        Kind.REQUEST,
        Kind.GRANT,
        Kind.REQUEST,
        Kind.DENIAL,
        Kind.REVOCATION,
        Kind.LIST,
        Kind.CIPHERTEXT,
        Kind.VERSION,
        Kind.HOLDER,  # the transfer: the NFT moves,
        Kind.STATE,  # the dataset awaits its re-key,
        Kind.STATE,  # and a new transfer epoch begins
        Kind.STATE,  # the new holder's re-key: active again,
        Kind.VERSION,  # with a version wrapped to it
        Kind.STATE,  # then disabled
    ]
    assert kinds == expected_order
    assert Kind.OTHER not in kinds

    by_kind = {e.kind: e for e in entries}
    assert by_kind[Kind.SALE].args["buyer"] == BUYER.address
    assert by_kind[Kind.TRANSFER].args["receiver"] == MARKET.address
    assert by_kind[Kind.CIPHERTEXT].args["record_id"] == story.record_id
    assert "no resale" in by_kind[Kind.DENIAL].text
    assert "disabled" in by_kind[Kind.STATE].text
    assert h("metadata v3").hex() in by_kind[Kind.VERSION].text  # the last version
    timestamps = [e.timestamp for e in entries]
    assert timestamps == sorted(timestamps) and timestamps[0] > 1_600_000_000
    assert all(e.tx_hash.startswith("0x") and len(e.tx_hash) == 66 for e in entries)

    # Holders over time: the owner, then OTHER from the transfer on.
    held = holders(entries)
    assert [x.holder for x in held] == [OWNER.address, OTHER.address]
    moved = [e for e in entries if e.kind == Kind.HOLDER][-1]
    assert held[0].until_block == held[1].since_block == moved.block_number
    assert held[1].until is None

    vs = versions(entries)
    assert [(v.version, v.metadata_hash, v.author) for v in vs] == [
        (1, h("metadata"), OWNER.address),
        (2, h("metadata v2"), OWNER.address),
        (3, h("metadata v3"), OTHER.address),
    ]
    assert (vs[1].manifest_hash, vs[1].merkle_root, vs[1].metadata_uri) == (
        h("m2"),
        h("r2"),
        "https://x/v2",
    )
    assert ledger.data_nft.get_dataset(story.dataset).metadata_hash == vs[-1].metadata_hash

    # Other datasets' events are never in this dataset's timeline.
    mine = entries
    token = ledger.data_nft.datatoken_of(story.dataset)
    for e in mine:
        if e.contract == "Datatoken":
            assert e.address == token
        elif e.contract == "DataNFT" and e.event in ("Transfer", "Approval"):
            assert e.args["token_id"] == story.dataset
        else:
            assert e.args["dataset"] == story.dataset
    other = timeline(ledger, story.other)
    assert {e.tx_hash for e in mine}.isdisjoint({e.tx_hash for e in other})
    assert [e.kind for e in other].count(Kind.REQUEST) == 1
    assert [e.kind for e in other][-1] == Kind.VERSION
    free = timeline(ledger, story.free)
    assert {Kind.DISPENSER, Kind.DISPENSE, Kind.ORDER} <= {e.kind for e in free}
    assert Kind.SALE not in {e.kind for e in free}

    # Every event of the dataset that the full reader sees, the filtered reader sees too.
    everything = [
        e
        for e in ledger.events()
        if e.args.get("dataset", e.args.get("token_id") if e.contract == "DataNFT" else None)
        == story.dataset
        or e.address == token
    ]
    assert [(e.tx_hash, e.log_index) for e in everything] == [
        (e.tx_hash, e.log_index) for e in mine
    ]


def test_small_pages_give_the_same_timeline(told: tuple[Ledger, Story]) -> None:
    embedded_ledger, story = told
    whole = timeline(embedded_ledger, story.dataset)
    assert timeline(embedded_ledger, story.dataset, page=3) == whole
    last = whole[5].block_number
    assert timeline(embedded_ledger, story.dataset, end=last) == [
        e for e in whole if e.block_number <= last
    ]


def test_unknown_dataset_is_a_clear_error(embedded_ledger: Ledger) -> None:
    count = embedded_ledger.data_nft.dataset_count()
    missing = count + 1
    with pytest.raises(DatasetNotFound, match=rf"dataset {missing} does not exist .* {count} data"):
        timeline(embedded_ledger, missing)
    with pytest.raises(DatasetNotFound):
        timeline(embedded_ledger, 0)


def test_unknown_events_are_shown_generically() -> None:
    event = Event(
        name="JobFinished",
        contract="ComputeRegistry",
        address="0x" + "11" * 20,
        block_number=9,
        tx_hash="0x" + "22" * 32,
        log_index=0,
        args={"dataset": 1, "result_hash": b"\xab" * 32},
    )
    kind, text = describe(event)
    assert kind is Kind.OTHER
    assert text == f"ComputeRegistry.JobFinished(dataset=1, result_hash=0x{'ab' * 32})"
    # A known event whose fields changed is shown generically too, not a crash.
    changed = Event("Bought", "FixedRateExchange", event.address, 9, event.tx_hash, 1, {"x": 1})
    assert describe(changed) == (Kind.OTHER, "FixedRateExchange.Bought(x=1)")


def test_rendering(told: tuple[Ledger, Story]) -> None:
    from rich.console import Console

    embedded_ledger, story = told
    entries = timeline(embedded_ledger, story.dataset)
    lines = timeline_lines(entries)
    assert len(lines) == len(entries) and "created by" in lines[1]
    console = Console(record=True, width=200)
    console.print(render_timeline(entries, title="dataset"))
    out = console.export_text()
    assert "ciphertext" in out and "revocation" in out
