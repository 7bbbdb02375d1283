"""The reads the sealed :class:`Chain` offers callers above the ledger, on both backends:
batched view calls, block headers and timestamps, receipts and paged log queries."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_utils.crypto import keccak

from datagora.ledger import Ledger, Log, dev_account
from datagora.ledger.errors import ChainError
from datagora.ledger.views import CallCoalescer
from helpers import BUYER, ON_EVERY_NODE, OWNER, h

APPROVAL = "0x" + keccak(text="Approval(address,address,uint256)").hex()


def _approve_all(ledger: Ledger) -> list[int]:
    """Six holders approve BUYER for 1000..1005; the block of each approval."""
    token = ledger.market_token
    return [token.approve(dev_account(i), BUYER.address, 1000 + i).block_number for i in range(6)]


@ON_EVERY_NODE
def test_view_calls_read_one_word_each_and_fail_on_a_view_without_answer(
    ledger: Ledger,
) -> None:
    _approve_all(ledger)
    token = ledger.market_token
    views = [token.prepare("allowance", dev_account(i).address, BUYER.address) for i in range(6)]
    assert ledger.chain.call_views(views) == [1000 + i for i in range(6)]
    assert ledger.chain.call_views([]) == []
    # An account without code answers "0x": no word, so the read fails.
    nothing = {"to": OWNER.address, "data": views[0]["data"]}
    with pytest.raises(ChainError):
        ledger.chain.call_views([views[0], nothing])

    async def both() -> list[Any]:
        batcher = ledger.chain.view_batcher(ledger.deployment.contracts.get("ViewBatch"))
        groups = [views[:3], views[3:], [nothing]]
        return await asyncio.gather(*(batcher.call(g) for g in groups), return_exceptions=True)

    first, second, failed = asyncio.run(both())
    assert first == [1000, 1001, 1002] and second == [1003, 1004, 1005]
    assert isinstance(failed, ChainError)


def test_block_headers_hashes_and_timestamps(ledger: Ledger) -> None:
    chain = ledger.chain
    blocks = _approve_all(ledger)
    ledger.chain.advance_time(3_600)
    last = chain.block_number
    headers = chain.block_headers([*blocks, last, blocks[0]])
    assert sorted(headers) == sorted({*blocks, last})
    for number, header in headers.items():
        assert header.number == number
        assert chain.block_hash(number) == header.hash
        assert header.hash.startswith("0x") and len(header.hash) == 66
    stamps = chain.block_timestamps([*blocks, last])
    assert stamps == {n: headers[n].timestamp for n in headers}
    assert stamps[last] >= stamps[blocks[-1]] + 3_600
    assert chain.block_timestamps([]) == {}
    assert chain.block_hash(last + 1_000) is None
    with pytest.raises(ChainError):
        chain.block_timestamps([last + 1_000])


def test_a_node_refusing_batches_still_gives_every_header(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The liar: a node that refuses JSON-RPC batches. Headers are then read one by one,
    and a block it cannot give at all is an error, never a silent gap."""
    chain = ledger.chain
    blocks = _approve_all(ledger)
    expected = chain.block_headers(blocks)

    def refuse() -> Any:
        raise NotImplementedError("this node does not accept batch requests")

    # Only the JSON-RPC backend batches header reads; the embedded one reads one by one.
    monkeypatch.setattr(chain.w3, "batch_requests", refuse)  # type: ignore[attr-defined]
    assert chain.block_headers(blocks) == expected
    with pytest.raises(ChainError, match="reading block"):
        chain.block_headers([*blocks, chain.block_number + 1_000])


def test_transaction_receipts(ledger: Ledger) -> None:
    tx = ledger.market_token.approve(OWNER, BUYER.address, 7)
    receipt = ledger.chain.transaction_receipt(tx.tx_hash)
    assert receipt["blockNumber"] == tx.block_number
    assert ledger.chain.transaction_receipt(bytes.fromhex(tx.tx_hash[2:]))["status"] == 1
    with pytest.raises(ChainError):
        ledger.chain.transaction_receipt(h("no such transaction"))


@ON_EVERY_NODE
def test_log_queries_filter_by_topic_and_page_over_block_ranges(ledger: Ledger) -> None:
    chain = ledger.chain
    token = ledger.market_token
    blocks = _approve_all(ledger)
    start, end = blocks[0], blocks[-1]
    logs = chain.get_logs([token.address], [APPROVAL], start, end)
    assert [log.block_number for log in logs] == blocks
    first = logs[0]
    assert isinstance(first, Log) and first.address == token.address
    assert first.topics[0].hex() == APPROVAL[2:]
    assert first.topics[1][-20:] == bytes.fromhex(dev_account(0).address[2:])
    assert int.from_bytes(first.data, "big") == 1000
    receipt = chain.transaction_receipt(first.tx_hash)
    assert first.log_index == receipt["logs"][0]["logIndex"]
    # A page of one block at a time reads the same logs; `end` defaults to the latest.
    assert chain.get_logs([token.address], [APPROVAL], start, end, page=1) == logs
    assert chain.get_logs([token.address], [APPROVAL], start) == logs
    # None matches any value at a position; a topic value selects.
    owner_topic = "0x" + bytes.fromhex(dev_account(2).address[2:]).rjust(32, b"\0").hex()
    (mine,) = chain.get_logs([token.address], [None, owner_topic], start, end)
    assert mine.block_number == blocks[2]
    assert chain.get_logs([], (), start, end) == []


def test_a_node_refusing_large_ranges_gets_halves(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The liar: a node that refuses any log query over more than two blocks."""
    chain = ledger.chain
    blocks = _approve_all(ledger)
    expected = chain.get_logs([ledger.market_token.address], [APPROVAL], blocks[0], blocks[-1])
    honest = chain._logs
    asked: list[tuple[int, int]] = []

    def refusing(addresses: list[str], topics: list[Any], lo: int, hi: int) -> list[Log]:
        asked.append((lo, hi))
        if hi - lo > 1:
            raise ValueError("query exceeds max block range 2")
        return honest(addresses, topics, lo, hi)

    monkeypatch.setattr(chain, "_logs", refusing)
    got = chain.get_logs([ledger.market_token.address], [APPROVAL], blocks[0], blocks[-1])
    assert got == expected and asked[0] == (blocks[0], blocks[-1]) and len(asked) > 1

    def broken(addresses: list[str], topics: list[Any], lo: int, hi: int) -> list[Log]:
        raise ValueError("internal error")

    monkeypatch.setattr(chain, "_logs", broken)
    with pytest.raises(ChainError, match="internal error"):
        chain.get_logs([ledger.market_token.address], [APPROVAL], blocks[0], blocks[-1])


def test_key_value_events_of_an_owner(ledger: Ledger) -> None:
    start = ledger.chain.block_number
    ledger.kv.set(OWNER, h("k1"), h("v1"))
    ledger.kv.set(BUYER, h("k1"), h("v2"))
    ledger.kv.remove(OWNER, h("k1"))
    events = ledger.kv.events_of(OWNER.address, start, ledger.chain.block_number)
    assert [e.name for e in events] == ["KeySet", "KeyRemoved"]
    assert all(e.contract == "KeyValueStore" and e.address == ledger.kv.address for e in events)
    assert bytes(events[0].args["content_hash"]) == h("v1")


@pytest.mark.anvil
def test_view_batch_reads_many_views_and_fails_only_the_group_whose_view_failed(
    _anvil_ledger: Ledger,
) -> None:
    ledger = _anvil_ledger
    snapshot = ledger.chain.snapshot()
    try:
        token = ledger.market_token
        spender = BUYER.address
        holders = [dev_account(i) for i in range(6)]
        for i, holder in enumerate(holders):
            token.approve(holder, spender, 1000 + i)
        coalescer = CallCoalescer(
            ledger.chain.url,  # type: ignore[attr-defined]
            view_batch=ledger.deployment.contracts["ViewBatch"],
        )
        views = [token.prepare("allowance", h.address, spender) for h in holders]
        # A two-word call to an account without code answers nothing: that view failed.
        nothing = {"to": OWNER.address, "data": views[0]["data"]}

        async def run(extra: list[dict[str, Any]], via: CallCoalescer = coalescer) -> list[Any]:
            # 200 groups of 3 views: more than one ViewBatch call holds (384 views).
            groups = [[views[i % 6]] * 3 for i in range(200)] + [extra]
            return await asyncio.gather(*(via.call(g) for g in groups), return_exceptions=True)

        results = asyncio.run(run([nothing]))
        assert results[:200] == [[1000 + i % 6] * 3 for i in range(200)]
        assert isinstance(results[200], ChainError)
        assert coalescer.batches <= 3
        # A view of another shape (one argument) sends its batch call by call.
        results = asyncio.run(run([token.prepare("balanceOf", spender)]))
        assert results[:200] == [[1000 + i % 6] * 3 for i in range(200)]
        assert results[200] == [token.balance_of(spender)]
        # Call by call (no ViewBatch), the view without an answer ("0x") also fails
        # only its own group.
        plain = CallCoalescer(ledger.chain.url)  # type: ignore[attr-defined]
        results = asyncio.run(run([nothing], via=plain))
        assert results[:200] == [[1000 + i % 6] * 3 for i in range(200)]
        assert isinstance(results[200], ChainError)
    finally:
        ledger.chain.revert(snapshot)
