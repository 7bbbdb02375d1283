"""`datagora bench ledger`: gas per operation and client throughput against anvil.

Gas comes from real receipts on a fresh anvil. Throughput is shown as a ratio:
datagora's client (typed wrapper, local signing, local nonces, pipelined sends)
against a minimal loop of pre-signed raw transactions on the same node, in the
same run, which is the node's own limit as seen from this machine.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from eth_typing import HexStr

from datagora.ledger import Chain, Ledger, Pricing, PublishParams, dev_account
from datagora.ledger.anvil import Anvil

# Ocean Protocol V4 on the same kind of node (../shared/NOTES.md): publish with a
# fixed price and metadata, and a new buyer's approve + buy + order.
OCEAN_V4 = {
    "publish_gas": 1_477_832 + 203_085,
    "publish_txs": 2,
    "consume_gas": 46_256 + 142_864 + 79_428,
    "consume_txs": 3,
}


def _h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _nonce(chain: Chain, account: LocalAccount) -> int:
    return int(chain.w3.eth.get_transaction_count(account.address))


def _escrow_gas(
    ledger: Ledger, owner: LocalAccount, consumer: LocalAccount, dataset: int, key: bytes
) -> tuple[int, int]:
    """A job paid through the escrow: the consumer's lock, and the owner's node recording
    the result (`complete`, which pays the owner: the claim). The lock is measured once
    the registry already holds an escrow (the very first one also pays for the
    registry's first MarketToken balance)."""
    compute = ledger.compute
    algorithm, params = _h("train.py"), _h("{}")
    compute.set_job_terms(owner, dataset, 10**18, 3600)
    compute.set_trusted(owner, dataset, algorithm, True)
    ledger.market_token.approve(consumer, compute.address, 10 * 10**18)
    compute.lock(consumer, dataset, algorithm, params, key)  # the registry's first escrow
    lock = compute.lock(consumer, dataset, algorithm, params, key)
    job, _ = compute.record_job(
        owner, dataset, 1, 1, consumer.address, algorithm, params, lock.escrow
    )
    claim = compute.complete(owner, job, True, _h("sealed result"), 0, "ok")
    return lock.tx.gas_used, claim.gas_used


def _transfer_and_rekey_gas(
    ledger: Ledger, holder: LocalAccount, heir: LocalAccount, dataset: int
) -> int:
    """Giving a dataset away, all three transactions: the holder leaves the data key
    wrapped to the heir (a CiphertextStore record of a wrapped key's size), transfers
    the NFT, and the heir's re-key (a new version with a new manifest and root)."""
    wrapped = bytes(525)  # the JSON of a WrappedKey (capsule, ciphertext, key, in hex)
    record = ledger.ciphertexts.store(holder, wrapped, dataset, _h("handover"))
    transfer = ledger.data_nft.transfer(holder, dataset, heir.address)
    rekey = ledger.data_nft.update(
        heir, dataset, _h("metadata v2"), "https://catalog.example/v2.json", _h("m2"), _h("r2")
    )
    return record.tx.gas_used + transfer.gas_used + rekey.gas_used


def measure_gas(ledger: Ledger) -> dict[str, Any]:
    """Run each operation once as a user would and read its gas from the receipt."""
    chain = ledger.chain
    deployer, owner, market = dev_account(0), dev_account(1), dev_account(2)
    buyers = [dev_account(i) for i in (3, 4, 5)]
    for b in buyers:
        ledger.market_token.mint(deployer, b.address, 10**22)
    params = PublishParams(
        metadata_hash=_h("metadata"),
        metadata_uri="https://catalog.example/datasets/breast-cancer-wisconsin.json",
        manifest_hash=_h("manifest"),
        merkle_root=_h("root"),
        pricing=Pricing.FIXED,
        price=10**18,
        market_fee_bps=100,
        market_fee_recipient=market.address,
    )
    before = _nonce(chain, owner)
    published = ledger.factory.publish(owner, params)
    publish_txs = _nonce(chain, owner) - before
    datatoken = ledger.datatoken(published.dataset)
    key = bytes([2]) + _h("consumer key")  # 33 bytes, the size of an Umbral public key

    # The first sale pays recipients that held no MarketToken yet (a one-off
    # cost of the dataset, not of the buyer); a new buyer is measured after it.
    first = ledger.exchange.buy_and_order(buyers[0], published.dataset, datatoken, 0, key)
    before = _nonce(chain, buyers[1])
    new_buyer = ledger.exchange.buy_and_order(buyers[1], published.dataset, datatoken, 0, key)
    consume_txs = _nonce(chain, buyers[1]) - before
    returning = ledger.exchange.buy_and_order(buyers[1], published.dataset, datatoken, 0, key)

    datatoken.mint(owner, buyers[2].address, 2)
    order = datatoken.order(buyers[2], 0, key)

    request_id, request_tx = ledger.access.request(buyers[2], published.dataset, "research", key)
    grant_tx = ledger.access.grant(owner, request_id, chain.timestamp() + 86_400)
    revoke_tx = ledger.access.revoke(owner, request_id)
    _, kv_tx = ledger.kv.set(owner, _h("key"), _h("value v1"))
    record = ledger.ciphertexts.store(owner, bytes(range(256)) * 4, published.dataset, _h("k"))
    lock_gas, claim_gas = _escrow_gas(ledger, owner, buyers[2], published.dataset, key)
    rekey_gas = _transfer_and_rekey_gas(ledger, owner, market, published.dataset)
    return {
        "gas": {
            "publish": published.tx.gas_used,
            "buy_and_order": new_buyer.tx.gas_used,
            "buy_and_order_returning_buyer": returning.tx.gas_used,
            "buy_and_order_first_sale": first.tx.gas_used,
            "order": order.tx.gas_used,
            "request": request_tx.gas_used,
            "grant": grant_tx.gas_used,
            "revoke": revoke_tx.gas_used,
            "kv_set": kv_tx.gas_used,
            "onchain_record_1kib": record.tx.gas_used,
            "compute_escrow_lock": lock_gas,
            "compute_escrow_claim": claim_gas,
            "transfer_and_rekey": rekey_gas,
        },
        "publish_txs": publish_txs,
        "consume_txs": consume_txs,
    }


def _raw_rpc_limit(
    url: str, chain: Chain, sender: LocalAccount, to: str, data: str, gas: int, count: int
) -> float:
    """Pre-signed raw transactions sent back to back over one keep-alive connection."""
    nonce = _nonce(chain, sender)
    price = int(chain.w3.eth.gas_price) * 2
    raws = [
        "0x"
        + bytes(
            sender.sign_transaction(
                {
                    "to": HexStr(to),
                    "data": HexStr(data),
                    "gas": gas,
                    "gasPrice": price,
                    "nonce": nonce + i,
                    "chainId": chain.chain_id,
                    "value": 0,
                }
            ).raw_transaction
        ).hex()
        for i in range(count)
    ]
    with httpx.Client(timeout=30) as client:
        start = time.perf_counter()
        last = ""
        for i, raw in enumerate(raws):
            r = client.post(
                url,
                json={
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "eth_sendRawTransaction",
                    "params": [raw],
                },
            )
            last = r.json()["result"]
        while True:
            r = client.post(
                url,
                json={
                    "jsonrpc": "2.0",
                    "id": 0,
                    "method": "eth_getTransactionReceipt",
                    "params": [last],
                },
            )
            if r.json().get("result"):
                break
        return count / (time.perf_counter() - start)


def measure_throughput(ledger: Ledger, url: str, count: int) -> dict[str, Any]:
    """Sustained token transfers through datagora's client vs. the raw loop."""
    chain, token = ledger.chain, ledger.market_token
    sender, receiver = dev_account(6), dev_account(7)
    token.mint(dev_account(0), sender.address, 10**24)
    tx = token.prepare("transfer", receiver.address, 1)
    gas = chain.estimate(sender.address, tx, "transfer") + 10_000
    limit = _raw_rpc_limit(url, chain, sender, tx["to"], tx["data"], gas, count)

    start = time.perf_counter()
    pending = [
        chain.send(sender, token.prepare("transfer", receiver.address, 1), "transfer", gas)
        for _ in range(count)
    ]
    chain.wait_all(pending)
    client = count / (time.perf_counter() - start)
    return {
        "rpc_tx_per_s": round(client, 1),
        "anvil_limit_tx_per_s": round(limit, 1),
        "rpc_ratio": round(client / limit, 3),
        "throughput_txs": count,
    }


def run(tx_count: int = 1000) -> dict[str, Any]:
    with Anvil() as node:
        ledger = Ledger.deploy(Chain.rpc(node.url), dev_account(0))
        result = measure_gas(ledger)
        result.update(measure_throughput(ledger, node.url, tx_count))
    gas = result["gas"]
    result["targets"] = {
        "publish_gas_max": 500_000,
        "publish_ok": gas["publish"] <= 500_000,
        "buy_and_order_gas_max": 150_000,
        "buy_and_order_ok": gas["buy_and_order"] <= 150_000,
    }
    result["ocean_v4_reference"] = OCEAN_V4
    result["vs_ocean"] = {
        "publish_gas_ratio": round(gas["publish"] / OCEAN_V4["publish_gas"], 3),
        "consume_gas_ratio": round(gas["buy_and_order"] / OCEAN_V4["consume_gas"], 3),
    }
    result["backend"] = "anvil"
    return result
