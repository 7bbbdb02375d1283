"""The indexer against a real chain: resume, confirmations, reorgs, metadata states."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from datagora.catalog import db as t
from datagora.catalog.db import Database
from datagora.catalog.indexer import Indexer
from datagora.catalog.search import SearchQuery, dataset_details, search
from datagora.errors import ConfigError
from datagora.ledger import Chain, Ledger, Pricing, dev_account
from datagora.ledger.anvil import Anvil
from datagora.storage.metadata import build_metadata
from helpers import BUYER, OWNER, fund, publish


def meta(title: str, **extra: object) -> bytes:
    doc = {
        "title": title,
        "license": "CC-BY-4.0",
        "creator": "test",
        "services": [{"id": 0, "type": "download"}],
        **extra,
    }
    return build_metadata(doc).to_bytes()


def count(db: Database, table: t.Table) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def publish_with(ledger: Ledger, indexer: Indexer, raw: bytes, **kw: object) -> int:
    import hashlib

    indexer.put_metadata(raw)
    return publish(ledger, metadata_hash=hashlib.sha256(raw).digest(), **kw).dataset


def test_index_search_and_details(embedded_ledger: Ledger, database: Database) -> None:
    ix = Indexer(embedded_ledger, database)
    d = publish_with(embedded_ledger, ix, meta("Breast cancer cohort", tags=["oncology"]))
    fund(embedded_ledger, BUYER.address)
    embedded_ledger.exchange.buy_and_order(BUYER, d, embedded_ledger.datatoken(d))
    ix.sync()
    found = search(database, SearchQuery(q="breast canc"))
    assert [i.id for i in found.items] == [d]
    item = found.items[0]
    assert (item.pricing, item.price, item.orders, item.owner) == (
        "fixed",
        str(10**18),
        1,
        OWNER.address,
    )
    details = dataset_details(database, d)
    assert details is not None and details["metadata"]["title"] == "Breast cancer cohort"
    assert [v["version"] for v in details["versions"]] == [1]
    assert count(database, t.events) == len(list(embedded_ledger.events()))


def test_job_terms_of_a_dataset_are_not_taken_for_a_job(
    embedded_ledger: Ledger, database: Database
) -> None:
    """`JobTermsChanged` starts with "Job" but names no job: it stopped the indexer for
    good (KeyError 'job'), found by the chaos run once it priced compute jobs."""
    ix = Indexer(embedded_ledger, database)
    d = publish_with(embedded_ledger, ix, meta("priced jobs"))
    embedded_ledger.compute.set_job_terms(OWNER, d, 10**16, 3600)
    assert ix.sync() > 0
    assert count(database, t.events) == len(list(embedded_ledger.events()))
    assert count(database, t.jobs) == 0


def test_restart_resumes_without_duplicates(embedded_ledger: Ledger, database: Database) -> None:
    ix = Indexer(embedded_ledger, database)
    publish_with(embedded_ledger, ix, meta("one"))
    ix.sync()
    first = count(database, t.events)
    again = Indexer(embedded_ledger, database)  # a new process on the same database
    assert again.sync() == 0
    d = publish_with(embedded_ledger, again, meta("two"), pricing=Pricing.NONE)
    embedded_ledger.datatoken(d).mint(OWNER, BUYER.address, 2)
    embedded_ledger.datatoken(d).order(BUYER, 0, b"k")
    assert again.sync() > 0
    assert count(database, t.events) == len(list(embedded_ledger.events())) > first
    assert count(database, t.orders) == 1
    assert search(database, SearchQuery()).total == 2


def test_confirmations_hold_back_recent_blocks(embedded_ledger: Ledger, database: Database) -> None:
    ix = Indexer(embedded_ledger, database, confirmations=2)
    publish_with(embedded_ledger, ix, meta("late"))
    ix.sync()
    assert search(database, SearchQuery()).total == 0
    embedded_ledger.chain.advance_time(1)
    embedded_ledger.chain.advance_time(1)
    ix.sync()
    assert search(database, SearchQuery()).total == 1


def test_metadata_pending_then_pushed_and_invalid(
    embedded_ledger: Ledger, database: Database
) -> None:
    import hashlib

    ix = Indexer(embedded_ledger, database)
    raw = meta("arrives later")
    d = publish(embedded_ledger, metadata_hash=hashlib.sha256(raw).digest()).dataset
    # Valid JSON hashing to the chain value, but not a valid metadata document.
    bad = b'{"title":"no services"}'
    e = publish(embedded_ledger, metadata_hash=hashlib.sha256(bad).digest()).dataset
    ix.sync()
    assert dataset_details(database, d)["metadata_status"] == "pending"  # type: ignore[index]
    assert search(database, SearchQuery(q="arrives")).total == 0
    ix.put_metadata(raw)
    assert dataset_details(database, d)["metadata_status"] == "ok"  # type: ignore[index]
    assert search(database, SearchQuery(q="arrives")).total == 1
    with database.engine.begin() as conn:
        conn.execute(
            t.blobs.insert().values(sha256=hashlib.sha256(bad).hexdigest(), data=bad.decode())
        )
    ix.retry_pending()
    assert dataset_details(database, e)["metadata_status"] == "invalid"  # type: ignore[index]


def test_details_show_the_access_condition_in_force(
    embedded_ledger: Ledger, database: Database
) -> None:
    ix = Indexer(embedded_ledger, database)
    d = publish_with(embedded_ledger, ix, meta("gated"))
    ix.sync()
    assert dataset_details(database, d)["conditions"] == []  # type: ignore[index]
    embedded_ledger.access.set_condition(OWNER, d, 0, "order AND before:2030-01-01")
    embedded_ledger.access.set_condition(OWNER, d, 1, "allowlist")
    embedded_ledger.access.set_condition(OWNER, d, 0, "order AND before:2031-01-01")
    ix.sync()
    shown = dataset_details(database, d)["conditions"]  # type: ignore[index]
    assert [(c["service"], c["condition"]) for c in shown] == [
        (0, "order AND before:2031-01-01"),
        (1, "allowlist"),
    ]
    assert bytes.fromhex(shown[0]["hash"]) == embedded_ledger.access.condition_hash(d, 0)
    embedded_ledger.access.set_condition(OWNER, d, 1, None)  # cleared: no longer shown
    ix.sync()
    assert [c["service"] for c in dataset_details(database, d)["conditions"]] == [0]  # type: ignore[index]


def test_updates_state_and_holders(embedded_ledger: Ledger, database: Database) -> None:
    from datagora.ledger import DatasetState
    from helpers import OTHER, h

    ix = Indexer(embedded_ledger, database)
    d = publish_with(embedded_ledger, ix, meta("versioned"))
    raw2 = meta("versioned two")
    import hashlib

    ix.put_metadata(raw2)
    embedded_ledger.data_nft.update(OWNER, d, hashlib.sha256(raw2).digest(), "", h("m"), h("r"))
    embedded_ledger.data_nft.transfer(OWNER, d, OTHER.address)
    embedded_ledger.exchange.set_price(OTHER, d, 5 * 10**18)
    ix.sync()
    details = dataset_details(database, d)
    assert details is not None
    assert (details["version"], details["title"], details["owner"]) == (
        2,
        "versioned two",
        OTHER.address,
    )
    assert details["price"] == str(5 * 10**18) and details["merkle_root"] == h("r").hex()
    assert [v["version"] for v in details["versions"]] == [1, 2]
    # Transferred: it awaits the new holder's re-key, so the catalog lists it as inactive.
    assert details["state"] == DatasetState.AWAITING_REKEY
    assert search(database, SearchQuery()).total == 0
    embedded_ledger.data_nft.update(OTHER, d, hashlib.sha256(raw2).digest(), "", h("m3"), h("r3"))
    ix.sync()
    assert search(database, SearchQuery()).total == 1
    embedded_ledger.data_nft.set_state(OTHER, d, DatasetState.DISABLED)
    ix.sync()
    assert search(database, SearchQuery()).total == 0
    assert search(database, SearchQuery(include_inactive=True)).total == 1


def test_another_deployment_is_refused(embedded_ledger: Ledger, database: Database) -> None:
    Indexer(embedded_ledger, database)
    other = Ledger.embedded()
    try:
        Indexer(other, database)
    except ConfigError as exc:
        assert "another deployment" in str(exc)
    else:
        raise AssertionError("a second deployment was accepted")


def test_reorg_on_anvil_reindexes_from_the_fork(anvil: Anvil, database: Database) -> None:
    ledger = Ledger.deploy(Chain.rpc(anvil.url), dev_account(0))
    ix = Indexer(ledger, database)
    kept = publish_with(ledger, ix, meta("kept"))
    ix.sync()
    snapshot = ledger.chain.snapshot()
    lost = publish_with(ledger, ix, meta("lost branch"))
    fund(ledger, BUYER.address)
    ledger.exchange.buy_and_order(BUYER, kept, ledger.datatoken(kept))
    ledger.kv.set(OWNER, b"k" * 32, b"v" * 32)
    ix.sync()
    assert search(database, SearchQuery()).total == 2
    assert count(database, t.orders) == 1 and count(database, t.kv) == 1
    ledger.chain.revert(snapshot)
    # The other branch: more blocks than the lost one, different contents.
    winner = publish_with(ledger, ix, meta("winning branch"))
    for _ in range(4):
        ledger.chain.advance_time(1)
    ix.sync()
    titles = {i.title for i in search(database, SearchQuery()).items}
    assert titles == {"kept", "winning branch"}
    assert winner == lost  # the same id, now a different dataset
    assert count(database, t.orders) == 0 and count(database, t.kv) == 0
    details = dataset_details(database, kept)
    assert details is not None and details["orders"] == 0
    assert count(database, t.events) == len(list(ledger.events()))


def _titles(database: Database) -> set[str]:
    return {i.title for i in search(database, SearchQuery(include_inactive=True)).items}


@pytest.mark.parametrize("page", [3, 2_000], ids=["across-page-ends", "one-page"])
def test_reorg_with_new_events_in_a_gap_of_empty_blocks(
    anvil: Anvil, database: Database, page: int
) -> None:
    """Only blocks with events and page ends are stored; a new branch's events in
    blocks that were empty on the old branch must not be skipped (the old code
    restarted from the first stored block that changed)."""
    ledger = Ledger.deploy(Chain.rpc(anvil.url), dev_account(0))
    ix = Indexer(ledger, database, page=page)
    publish_with(ledger, ix, meta("kept"))
    snapshot = ledger.chain.snapshot()
    for _ in range(8):  # empty blocks on the old branch
        ledger.chain.advance_time(1)
    ix.sync()
    assert _titles(database) == {"kept"}
    ledger.chain.revert(snapshot)
    publish_with(ledger, ix, meta("in the gap"))  # where the old branch had an empty block
    for _ in range(9):
        ledger.chain.advance_time(1)
    ix.sync()
    assert _titles(database) == {"kept", "in the gap"}
    assert count(database, t.events) == len(list(ledger.events()))


def test_deep_reorg_past_every_stored_block_starts_from_the_deployment(
    anvil: Anvil, database: Database
) -> None:
    chain = Chain.rpc(anvil.url)
    before_deploy = chain.snapshot()
    ledger = Ledger.deploy(chain, dev_account(0))
    ix = Indexer(ledger, database, page=2)
    publish_with(ledger, ix, meta("first"))
    after_deploy = chain.snapshot()
    publish_with(ledger, ix, meta("second"))
    ix.sync()
    assert _titles(database) == {"first", "second"}
    chain.revert(after_deploy)
    # A shallow reorg of one publish...
    publish_with(ledger, ix, meta("replacement"))
    ix.sync()
    assert _titles(database) == {"first", "replacement"}
    # ...and one that removes everything indexed since the deployment.
    chain.revert(before_deploy)
    other = Ledger.deploy(chain, dev_account(0))
    assert other.deployment.contracts == ledger.deployment.contracts  # same addresses
    for _ in range(3):
        chain.advance_time(1)
    ix.sync()
    assert _titles(database) == set()
    assert count(database, t.events) == len(list(ledger.events()))


def test_a_reorg_between_reading_logs_and_headers_stores_nothing_of_that_page(
    anvil: Anvil, database: Database
) -> None:
    ledger = Ledger.deploy(Chain.rpc(anvil.url), dev_account(0))
    ix = Indexer(ledger, database)
    ix.sync()
    snapshot = ledger.chain.snapshot()
    publish_with(ledger, ix, meta("old branch"))
    read = ix.reader.read

    def read_then_reorg(*args: Any, **kw: Any) -> Any:
        events = list(read(*args, **kw))
        ix.reader.read = read  # type: ignore[method-assign]
        ledger.chain.revert(snapshot)  # the logs just read are from a branch now gone
        publish_with(ledger, ix, meta("new branch"))
        ledger.chain.advance_time(1)
        return iter(events)

    ix.reader.read = read_then_reorg  # type: ignore[method-assign]
    ix.sync()
    assert "old branch" not in _titles(database)
    ix.sync()
    assert _titles(database) == {"new branch"}
    assert count(database, t.events) == len(list(ledger.events()))
