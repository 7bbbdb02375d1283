"""The chain client on a real network's terms, tried on anvil: EIP-1559 fees, stuck
transactions replaced, nonces re-read after a drop, confirmations, providers that cap
log queries or word reverts as Hardhat does (loopback JSON-RPC proxies in front of
anvil, real HTTP servers). The tests marked ``ON_BOTH`` run on Hardhat Network too."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from datagora.ledger import Chain, Ledger, dev_account
from datagora.ledger.anvil import Anvil
from datagora.ledger.chain import RpcChain
from datagora.ledger.errors import ChainError, InsufficientFunds, PriceAboveMaximum
from datagora.ledger.events import EventReader
from datagora.ledger.reverts import revert_reason, rule_error
from helpers import OWNER, publish

pytestmark = pytest.mark.anvil

SENDER = dev_account(5)
TO = dev_account(6).address


@pytest.fixture(scope="module")
def node() -> Iterator[Anvil]:
    # A node of its own: these tests switch mining off and on.
    with Anvil() as anvil:
        yield anvil


@pytest.fixture
def chain(request: pytest.FixtureRequest, node: Anvil) -> Iterator[RpcChain]:
    """A chain on this module's anvil, or (parametrized "hardhat") on Hardhat Network."""
    hardhat = getattr(request, "param", "anvil") == "hardhat"
    on = request.getfixturevalue("hardhat") if hardhat else node
    c = Chain.rpc(on.url)
    snapshot = c.snapshot()
    yield c
    c._dev_rpc("evm_setAutomine", [True])
    c.revert(snapshot)


# The tests that also run on Hardhat Network. They call the development methods by
# Hardhat's names (hardhat_setNextBlockBaseFeePerGas ...), which anvil answers too.
ON_BOTH = pytest.mark.parametrize(
    "chain", ["anvil", pytest.param("hardhat", marks=pytest.mark.hardhat)], indirect=True
)


def _pay(chain: Chain, wei: int = 1) -> dict[str, Any]:
    return {"to": TO, "value": wei}


def _mine_later(chain: RpcChain, after: float, blocks: int = 1) -> threading.Thread:
    def run() -> None:
        time.sleep(after)
        for _ in range(blocks):
            chain._dev_rpc("evm_mine", [])

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# -- 1. EIP-1559 -------------------------------------------------------------------------
@ON_BOTH
def test_transactions_are_type_2_and_mined_when_the_base_fee_rises(chain: RpcChain) -> None:
    base = int(chain.w3.eth.get_block("latest")["baseFeePerGas"])
    tip = int(chain._suggested_tip())
    # The next block's base fee is 80 % above the one the fees were computed from:
    # maxFeePerGas (base × 2 + tip) still covers it.
    risen = base * 18 // 10
    chain._dev_rpc("hardhat_setNextBlockBaseFeePerGas", [hex(risen)])
    receipt = chain.transact(SENDER, _pay(chain), "pay")
    tx = chain.w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["type"] == 2
    assert tx["maxFeePerGas"] == base * 2 + tip
    assert tx["maxPriorityFeePerGas"] == tip
    assert int(chain.w3.eth.get_block(receipt["blockNumber"])["baseFeePerGas"]) == risen
    assert receipt["effectiveGasPrice"] == risen + tip
    assert chain.fee_per_gas() == base + tip  # fees are cached briefly


def test_priority_fee_is_configurable(node: Anvil, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAGORA_PRIORITY_FEE", "7")
    c = Chain.rpc(node.url)
    assert c.priority_fee == 7
    assert Chain.rpc(node.url, priority_fee=9).fees()["maxPriorityFeePerGas"] == 9
    receipt = c.transact(SENDER, _pay(c), "pay")
    assert c.w3.eth.get_transaction(receipt["transactionHash"])["maxPriorityFeePerGas"] == 7


def test_a_chain_without_base_fee_gets_legacy_transactions() -> None:
    with Anvil(extra_args=["--hardfork", "berlin"]) as berlin:
        c = Chain.rpc(berlin.url)
        assert "gasPrice" in c.fees() and "maxFeePerGas" not in c.fees()
        receipt = c.transact(SENDER, _pay(c), "pay")
        tx = c.w3.eth.get_transaction(receipt["transactionHash"])
        assert tx["type"] == 0
        assert receipt["status"] == 1


# -- 2. stuck transactions ---------------------------------------------------------------
@ON_BOTH
def test_a_stuck_transaction_is_replaced_with_higher_fees(chain: RpcChain) -> None:
    chain._dev_rpc("evm_setAutomine", [False])
    chain.replace_after = 0.3
    pending = chain.send(SENDER, _pay(chain), "pay")
    first = pending.fields
    _mine_later(chain, 1.2)
    receipt = pending.receipt(timeout=20)
    assert len(pending.hashes) >= 2, "never replaced"
    mined = chain.w3.eth.get_transaction(receipt["transactionHash"])
    assert receipt["transactionHash"] == pending.hashes[-1] != pending.hashes[0]
    assert mined["nonce"] == first["nonce"]
    assert mined["maxFeePerGas"] * 8 >= first["maxFeePerGas"] * 9
    assert mined["maxPriorityFeePerGas"] * 8 >= first["maxPriorityFeePerGas"] * 9
    # Only one of them was mined: the sender paid once.
    assert chain.w3.eth.get_transaction_count(SENDER.address) == first["nonce"] + 1


def test_wait_all_replaces_stuck_transactions_too(chain: RpcChain) -> None:
    chain._dev_rpc("evm_setAutomine", [False])
    chain.replace_after = 0.3
    pending = [chain.send(SENDER, _pay(chain), "pay", gas=21_000) for _ in range(3)]
    _mine_later(chain, 1.5)
    receipts = chain.wait_all(pending, timeout=20)
    assert [r["status"] for r in receipts] == [1, 1, 1]
    assert all(len(p.hashes) >= 2 for p in pending)


# -- 3. nonces after a dropped transaction -----------------------------------------------
@ON_BOTH
def test_the_next_send_uses_the_pending_nonce_after_a_drop(chain: RpcChain) -> None:
    chain._dev_rpc("evm_setAutomine", [False])
    chain.replace_after = None
    dropped = chain.send(SENDER, _pay(chain), "pay")
    nonce = dropped.fields["nonce"]
    chain._dev_rpc("hardhat_dropTransaction", [dropped.tx_hash.to_0x_hex()])
    chain._dev_rpc("evm_setAutomine", [True])
    time.sleep(chain._nonces.resync_after + 0.1)
    after = chain.send(SENDER, _pay(chain), "pay")
    assert after.fields["nonce"] == nonce  # not nonce + 1, which would wait forever
    assert after.receipt(timeout=10)["status"] == 1


def test_waiting_on_a_dropped_transaction_says_so_and_frees_its_nonce(chain: RpcChain) -> None:
    chain._dev_rpc("evm_setAutomine", [False])
    chain.replace_after = None
    chain._nonces.resync_after = 3600  # only the wait may notice
    dropped = chain.send(SENDER, _pay(chain), "pay")
    chain._dev_rpc("anvil_dropTransaction", [dropped.tx_hash.to_0x_hex()])
    with pytest.raises(ChainError, match="dropped"):
        dropped.receipt(timeout=0.5)
    chain._dev_rpc("evm_setAutomine", [True])
    after = chain.send(SENDER, _pay(chain), "pay")
    assert after.fields["nonce"] == dropped.fields["nonce"]
    assert after.receipt(timeout=10)["status"] == 1


# -- 4. confirmations --------------------------------------------------------------------
def test_receipts_wait_for_the_configured_confirmations(node: Anvil) -> None:
    chain = Chain.rpc(node.url, confirmations=3)
    snapshot = chain.snapshot()
    try:
        chain._dev_rpc("evm_setAutomine", [False])
        pending = chain.send(SENDER, _pay(chain), "pay")
        done: list[Any] = []
        waiter = threading.Thread(target=lambda: done.append(pending.receipt(timeout=30)))
        waiter.start()
        for _ in range(2):
            chain._dev_rpc("evm_mine", [])
            time.sleep(0.5)
            assert not done, "returned before 3 confirmations"
        chain._dev_rpc("evm_mine", [])
        waiter.join(10)
        (receipt,) = done
        assert chain.block_number == receipt["blockNumber"] + 2
    finally:
        chain._dev_rpc("evm_setAutomine", [True])
        chain.revert(snapshot)


def test_confirmations_from_the_environment(node: Anvil, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Chain.rpc(node.url).confirmations == 1  # default
    monkeypatch.setenv("DATAGORA_CONFIRMATIONS", "4")
    assert Chain.rpc(node.url).confirmations == 4
    monkeypatch.setenv("DATAGORA_CONFIRMATIONS", "many")
    with pytest.raises(Exception, match="DATAGORA_CONFIRMATIONS must be a number"):
        Chain.rpc(node.url)


# -- a loopback JSON-RPC proxy -----------------------------------------------------------
class Proxy:
    """A real HTTP JSON-RPC server forwarding to anvil, where `rewrite` may answer a
    request (one JSON-RPC object) itself instead."""

    def __init__(self, upstream: str, rewrite: Callable[[dict[str, Any]], Any]) -> None:
        self.upstream = upstream
        self.rewrite = rewrite
        self.refused = 0
        self.refuse_batches = False
        self.batches = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if isinstance(body, list) and proxy.refuse_batches:
                    proxy.batches += 1
                    answer: Any = {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": -32600, "message": "batch requests are not supported"},
                    }
                elif isinstance(body, list):
                    answer = [proxy.answer(r) for r in body]
                else:
                    answer = proxy.answer(body)
                raw = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.client = httpx.Client(timeout=30)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, request: dict[str, Any]) -> Any:
        return self.client.post(self.upstream, json=request).json()

    def answer(self, request: dict[str, Any]) -> Any:
        own = self.rewrite(request)
        return own if own is not None else self.forward(request)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


# -- 5. providers that cap log queries ---------------------------------------------------
MAX_RANGE = 3


def test_event_reader_splits_ranges_a_provider_refuses(node: Anvil) -> None:
    ledger = Ledger.deploy(Chain.rpc(node.url), dev_account(0))
    for _ in range(4):
        publish(ledger)
    direct = list(ledger.events())
    proxy: Proxy

    def cap(request: dict[str, Any]) -> Any:
        if request.get("method") != "eth_getLogs":
            return None
        flt = request["params"][0]
        if int(flt["toBlock"], 16) - int(flt["fromBlock"], 16) + 1 > MAX_RANGE:
            proxy.refused += 1
            return {
                "jsonrpc": "2.0",
                "id": request["id"],
                "error": {"code": -32005, "message": "query returned more than 10000 results"},
            }
        return None

    proxy = Proxy(node.url, cap)
    try:
        capped = Chain.rpc(proxy.url)
        reader = EventReader(capped, ledger.deployment.contracts)
        through = list(reader.read(ledger.deployment.start_block, page=1_000))
        assert proxy.refused > 0
        assert [(e.name, e.block_number, e.log_index) for e in through] == [
            (e.name, e.block_number, e.log_index) for e in direct
        ]
        assert sum(e.name == "DatasetCreated" for e in through) == 4
    finally:
        proxy.close()


def test_a_refusal_that_is_not_about_size_is_reported(node: Anvil) -> None:
    def broken(request: dict[str, Any]) -> Any:
        if request.get("method") == "eth_getLogs":
            return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -1, "message": "boom"}}
        return None

    proxy = Proxy(node.url, broken)
    try:
        with pytest.raises(ChainError, match="boom"):
            Chain.rpc(proxy.url).get_logs([TO], (), 0, 10)
    finally:
        proxy.close()


# -- 7. Hardhat's revert wording ---------------------------------------------------------
@pytest.mark.parametrize(
    "text, reason",
    [
        (
            "VM Exception while processing transaction: reverted with reason string "
            "'datagora: price above maximum'",
            "datagora: price above maximum",
        ),
        (
            "Error: VM Exception while processing transaction: reverted with reason string "
            "'it's quoted'",
            "it's quoted",
        ),
        ("execution reverted: datagora: price above maximum", "datagora: price above maximum"),
        ("execution reverted", "reverted without a reason"),
        (
            "VM Exception while processing transaction: reverted with panic code 0x11 "
            "(Arithmetic operation overflowed outside of an unchecked block)",
            "panic 0x11 (Arithmetic operation overflowed outside of an unchecked block)",
        ),
        (
            "VM Exception while processing transaction: revert datagora: zero",
            "datagora: zero",
        ),
        (
            "VM Exception while processing transaction: reverted without a reason string",
            "reverted without a reason",
        ),
    ],
)
def test_revert_texts_of_each_node(text: str, reason: str) -> None:
    assert revert_reason(text) == reason


def test_hardhat_and_anvil_reverts_become_the_same_error() -> None:
    hardhat = rule_error(
        "buy",
        "VM Exception while processing transaction: reverted with reason string "
        "'datagora: price above maximum'",
    )
    anvil = rule_error("buy", "datagora: price above maximum")
    assert type(hardhat) is type(anvil) is PriceAboveMaximum
    assert str(hardhat) == str(anvil)


def _receipt_of(proxy: Proxy, tx_hash: str) -> Any:
    for _ in range(100):
        got = proxy.forward(
            {"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt", "params": [tx_hash]}
        )["result"]
        if got is not None:
            return got
        time.sleep(0.02)
    raise AssertionError("never mined")


def test_a_reverted_fixed_gas_send_keeps_its_hash_on_a_hardhat_like_node(node: Anvil) -> None:
    """Hardhat mines a transaction that reverts and still answers the send with an
    error: the send is a sent transaction all the same, whose receipt raises the rule
    with the hash, so the user can find the mined transaction."""
    ledger = Ledger.deploy(Chain.rpc(node.url), dev_account(0))
    proxy: Proxy

    def like_hardhat(request: dict[str, Any]) -> Any:
        if request.get("method") != "eth_sendRawTransaction":
            return None
        reply = proxy.forward(request)
        receipt = _receipt_of(proxy, reply["result"])
        if int(receipt["status"], 16) == 1:
            return reply
        reason = "ERC20: transfer amount exceeds balance"
        return {
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {
                "code": -32603,
                "message": "Error: VM Exception while processing transaction: reverted with "
                f"reason string '{reason}'",
                "data": {"txHash": reply["result"]},
            },
        }

    proxy = Proxy(node.url, like_hardhat)
    try:
        chain = Chain.rpc(proxy.url)
        poor = dev_account(7)
        tx = ledger.market_token.prepare("transfer", TO, 10**30)
        # Mined, it is a sent transaction as on anvil: the receipt raises, with the hash.
        pending = chain.send(poor, tx, "transfer", gas=200_000)
        with pytest.raises(InsufficientFunds) as raised:
            pending.receipt()
        assert raised.value.tx_hash is not None
        mined = chain.w3.eth.get_transaction_receipt(raised.value.tx_hash)  # type: ignore[arg-type]
        assert mined["status"] == 0
        # The nonce was used: the next send does not reuse it.
        assert chain.transact(poor, _pay(chain), "pay")["status"] == 1
    finally:
        proxy.close()


@ON_BOTH
def test_a_reverted_fixed_gas_send_is_mined_and_its_receipt_names_the_rule(
    chain: RpcChain,
) -> None:
    """With gas given nothing is estimated, and the failing transaction is mined. anvil
    takes it; Hardhat mines it and answers the send with the revert. Either way the
    send returns it, and its receipt raises the rule with the hash."""
    ledger = Ledger.deploy(chain, dev_account(0))
    tx = ledger.market_token.prepare("transfer", TO, 10**30)
    poor = dev_account(7)
    pending = chain.send(poor, tx, "transfer", gas=200_000)
    with pytest.raises(InsufficientFunds) as raised:
        pending.receipt()
    assert raised.value.tx_hash == pending.tx_hash.to_0x_hex()
    assert chain.w3.eth.get_transaction_receipt(pending.tx_hash)["status"] == 0
    # Its nonce was used: the next send takes the one after.
    after = chain.send(poor, _pay(chain), "pay")
    assert after.fields["nonce"] == pending.fields["nonce"] + 1
    assert after.receipt()["status"] == 1


def test_owner_publish_still_works_with_all_of_it(node: Anvil) -> None:
    ledger = Ledger.deploy(Chain.rpc(node.url, confirmations=1), dev_account(0))
    published = publish(ledger)
    assert ledger.data_nft.owner_of(published.dataset) == OWNER.address


# -- endpoints that refuse JSON-RPC batches -----------------------------------------------
def test_views_and_receipts_work_where_batches_are_refused(node: Anvil) -> None:
    import asyncio

    from datagora.ledger.views import CallCoalescer

    ledger = Ledger.deploy(Chain.rpc(node.url), dev_account(0))
    proxy = Proxy(node.url, lambda request: None)
    proxy.refuse_batches = True
    try:
        chain = Chain.rpc(proxy.url)
        token = ledger.market_token
        views = [
            {"to": token.address, "data": token.prepare("balanceOf", a.address)["data"]}
            for a in (dev_account(0), dev_account(7))
        ]
        expected = [token.balance_of(dev_account(0).address), 0]
        assert chain.call_views(views) == expected  # one batch refused, then one by one
        assert chain.call_views(views) == expected
        assert proxy.batches == 1  # refused once; not asked again

        coalescer = CallCoalescer(proxy.url)

        async def read() -> list[list[int]]:
            return list(await asyncio.gather(coalescer.call(views), coalescer.call(views[:1])))

        assert asyncio.run(read()) == [expected, expected[:1]]
        assert coalescer.batches_refused

        blocks = chain.block_headers([0, 1, 2])
        assert sorted(blocks) == [0, 1, 2]
        chain.replace_after = 0.2
        pending = [chain.send(SENDER, _pay(chain), "pay") for _ in range(2)]
        assert [r["status"] for r in chain.wait_all(pending, timeout=20)] == [1, 1]
    finally:
        proxy.close()


def test_a_lagging_pending_count_is_not_taken_for_a_drop(node: Anvil) -> None:
    """A provider behind a load balancer may answer a pending count that does not yet
    include a transaction it holds: the transaction is still known, so the local nonce
    stands (re-using its nonce would replace or collide with it)."""
    proxy: Proxy

    def lagging(request: dict[str, Any]) -> Any:
        if request.get("method") == "eth_getTransactionCount":
            latest = {**request, "params": [request["params"][0], "latest"]}
            return proxy.forward(latest)
        return None

    proxy = Proxy(node.url, lagging)
    chain = Chain.rpc(proxy.url)
    snapshot = chain.snapshot()
    try:
        chain._dev_rpc("evm_setAutomine", [False])
        chain.replace_after = None
        chain._nonces.resync_after = 0
        first = chain.send(SENDER, _pay(chain), "pay")
        second = chain.send(SENDER, _pay(chain), "pay")
        assert second.fields["nonce"] == first.fields["nonce"] + 1
        chain._dev_rpc("evm_mine", [])
        assert [r["status"] for r in chain.wait_all([first, second], timeout=10)] == [1, 1]
    finally:
        chain._dev_rpc("evm_setAutomine", [True])
        chain.revert(snapshot)
        proxy.close()


@ON_BOTH
def test_a_send_refused_below_a_jumped_base_fee_is_re_signed_with_fresh_fees(
    chain: RpcChain,
) -> None:
    """The base fee jumps past the maxFeePerGas computed from fees read before the jump;
    the node refuses the transaction (anvil: "max fee per gas less than block base
    fee"; Hardhat: "maxFeePerGas ... is too low for the next block, which has a
    baseFeePerGas of ..."): the client reads the fees again, re-signs under the same
    nonce and is mined."""
    fees = chain.fees()  # read (and cached) before the jump
    jumped = fees["maxFeePerGas"] * 3
    chain._dev_rpc("hardhat_setNextBlockBaseFeePerGas", [hex(jumped)])
    chain._dev_rpc("evm_mine", [])
    assert int(chain.w3.eth.get_block("latest")["baseFeePerGas"]) == jumped
    nonce = chain.w3.eth.get_transaction_count(SENDER.address)
    receipt = chain.transact(SENDER, _pay(chain), "pay")
    mined = chain.w3.eth.get_transaction(receipt["transactionHash"])
    assert receipt["status"] == 1 and mined["nonce"] == nonce
    assert mined["maxFeePerGas"] > jumped
