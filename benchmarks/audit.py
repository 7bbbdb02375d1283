"""Audit benchmark: the timeline of a dataset with 10,000 events, on a fresh anvil.

The history is made fast with pipelined transactions (local nonces, fixed gas)
the owner mints single datatokens to eight holders, who then spend them on
orders (a burn ``Transfer`` and an ``OrderStarted`` each), plus access requests.
Another dataset gets its own traffic interleaved, so the audit has to select
its dataset's logs rather than read a chain that holds nothing else.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from eth_account.signers.local import LocalAccount

from datagora.audit import timeline
from datagora.ledger import Chain, Ledger, PendingTx, Pricing, PublishParams, dev_account
from datagora.ledger.anvil import Anvil

TARGET_S = 2.0


def _h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _publish(ledger: Ledger, owner: LocalAccount, name: str) -> int:
    params = PublishParams(
        metadata_hash=_h(name),
        metadata_uri=f"https://example.org/{name}",
        pricing=Pricing.FIXED,
        price=10**18,
    )
    return ledger.factory.publish(owner, params).dataset


def build_history(ledger: Ledger, events: int = 10_000) -> tuple[int, int]:
    """Publish two datasets and give the first `events` events; returns both ids.

    Most events come from one-transaction purchases (``Bought``, the datatoken's
    mint and burn ``Transfer``s and ``OrderStarted``: four events per
    transaction), paid from an allowance given once (deadline 0: no permit);
    access requests make up the rest.
    """
    chain = ledger.chain
    owner, noise_owner, deployer = dev_account(1), dev_account(0), dev_account(0)
    buyers = [dev_account(i) for i in range(2, 10)]
    dataset = _publish(ledger, owner, "audited")
    other = _publish(ledger, noise_owner, "other")
    exchange, token = ledger.exchange, ledger.market_token
    price = exchange.quote(dataset).total
    pending: list[PendingTx] = []
    for buyer in buyers:
        pending.append(token._send(deployer, "mint", buyer.address, price * events))
    chain.wait_all(pending)
    chain.wait_all([token._send(b, "approve", exchange.address, 2**256 - 1) for b in buyers])

    def buy(buyer: LocalAccount, ds: int, gas: int) -> PendingTx:
        tx = exchange.prepare("buy_and_order", ds, 0, b"", price, 0, 0, 0, bytes(32), bytes(32))
        return chain.send(buyer, tx, "buy_and_order", gas)

    # Publishing made 4 events (NFT mint, creation, service, exchange).
    sales = (events - 4) // 4
    requests = events - 4 - 4 * sales
    buy_gas = 2 * chain.estimate(
        buyers[0].address,
        exchange.prepare("buy_and_order", dataset, 0, b"", price, 0, 0, 0, bytes(32), bytes(32)),
        "buy_and_order",
    )
    request_gas = 2 * chain.estimate(
        buyers[0].address, ledger.access.prepare("request", dataset, "study", b""), "request"
    )
    pending = []
    for i in range(sales):
        buyer = buyers[i % len(buyers)]
        pending.append(buy(buyer, dataset, buy_gas))
        if i % 5 == 0:  # the other dataset's traffic, interleaved
            pending.append(buy(buyer, other, buy_gas))
    for i in range(requests):
        tx = ledger.access.prepare("request", dataset, f"study {i}", b"")
        pending.append(chain.send(buyers[i % len(buyers)], tx, "request", request_gas))
    chain.wait_all(pending, timeout=600)
    return dataset, other


def run(events: int = 10_000) -> dict[str, Any]:
    """Build the history on a fresh anvil and time the audit of it."""
    # Blocks every half second hold many transactions each, as on a busy chain.
    with Anvil(block_time=0.5) as node:
        ledger = Ledger.deploy(Chain.rpc(node.url), dev_account(0))
        started = time.perf_counter()
        dataset, _ = build_history(ledger, events)
        build_s = time.perf_counter() - started
        started = time.perf_counter()
        entries = timeline(ledger, dataset)
        audit_s = time.perf_counter() - started
        blocks = ledger.chain.block_number
    return {
        "audit_s": round(audit_s, 3),
        "events": len(entries),
        "chain_blocks": blocks,
        "build_history_s": round(build_s, 1),
        "backend": "anvil",
        "targets": {"audit_s_max": TARGET_S, "audit_ok": audit_s < TARGET_S},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
