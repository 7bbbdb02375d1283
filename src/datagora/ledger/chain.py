"""One chain interface, two backends: an embedded py-evm chain and any JSON-RPC node.

Code above the ledger talks to a :class:`Chain` and never asks which backend it
has. Transactions are always signed locally with the sender's key, so the same
code drives the embedded chain, anvil and a production network.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import (
    BlockNotFound,
    ContractLogicError,
    TransactionNotFound,
    Web3Exception,
)
from web3.types import RPCEndpoint, TxReceipt

from datagora.errors import ConfigError
from datagora.http1 import Http1Pool
from datagora.ledger import jsonrpc
from datagora.ledger.errors import ChainError, ChainUnreachable, RpcError
from datagora.ledger.reverts import revert_reason, rule_error
from datagora.ledger.views import CallCoalescer, ThreadedViews, ViewBatcher, ViewCall, word
from datagora.tls import verify_context

# Anvil's well-known development mnemonic: the embedded chain funds the same
# accounts, so keys printed by anvil work on both backends. Development only.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_ACCOUNTS = 10
EMBEDDED_GAS_LIMIT = 15_000_000
DEV_BALANCE_WEI = 10_000 * 10**18  # what anvil gives each development account

Account.enable_unaudited_hdwallet_features()

# How a revert surfaces: web3 raises ContractLogicError; the embedded chain's
# provider sometimes lets eth-tester's own TransactionFailed through.
_REVERTS = (ContractLogicError, TransactionFailed)
# Providers word their "too much at once" refusals of a log query differently; on
# these the block range is halved and retried, any other failure is reported at once.
_RANGE_REFUSAL = re.compile(
    r"range|limit|too many|too large|exceed|more than|results|response size|timeout", re.I
)
# A send refused because the base fee rose past the transaction's maxFeePerGas, as
# anvil and geth word it ("base fee") and as Hardhat does ("baseFeePerGas").
_BASE_FEE_REFUSAL = re.compile(r"base ?fee", re.I)
_HEADERS_PER_BATCH = 500
# The tip offered when the node cannot suggest one (eth_maxPriorityFeePerGas missing).
DEFAULT_PRIORITY_FEE = 10**9
# A replacement must pay at least this much more (geth and anvil refuse less than +10 %).
REPLACEMENT_BUMP = (9, 8)
# Seconds a sent transaction may wait unmined before it is re-sent with higher fees.
DEFAULT_REPLACE_AFTER = 60.0


def _env_number(name: str, default: float, kind: type[int] | type[float] = int) -> Any:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def dev_account(index: int) -> LocalAccount:
    """Development account `index` of :data:`DEV_MNEMONIC` (never use on a real network)."""
    account: LocalAccount = Account.from_mnemonic(
        DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}"
    )
    return account


def _hex(value: bytes | str) -> str:
    return value if isinstance(value, str) else "0x" + bytes(value).hex()


def _reason(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    # web3 renders reverts as "execution reverted: <reason>" (anvil, geth, py-evm);
    # Hardhat words them its own way: reverts.revert_reason reads both.
    return revert_reason(text)


@dataclass(frozen=True, slots=True)
class Log:
    """One log entry as the chain reports it, the same on every backend."""

    address: str
    """The emitting contract, checksummed."""
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    block_hash: bytes
    tx_hash: bytes
    tx_index: int
    log_index: int
    block_timestamp: int | None
    """The block's timestamp where the node includes it in the log, else None."""


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """What callers read of a block: its number, hash (``0x``-hex) and timestamp."""

    number: int
    hash: str
    timestamp: int


def _int(value: Any) -> int:
    """A quantity from a raw JSON-RPC reply (hex string) or from web3 (int)."""
    return int(value, 16) if isinstance(value, str) else int(value)


def _bytes(value: Any) -> bytes:
    """Data from a raw JSON-RPC reply (hex string) or from web3 (HexBytes)."""
    return bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)


@lru_cache(maxsize=4096)
def _checksum(address: str) -> str:
    return str(Web3.to_checksum_address(address))


def _log(raw: Mapping[str, Any]) -> Log:
    stamp = raw.get("blockTimestamp")
    return Log(
        address=_checksum(str(raw["address"])),
        topics=tuple(_bytes(t) for t in raw["topics"]),
        data=_bytes(raw["data"]),
        block_number=_int(raw["blockNumber"]),
        block_hash=_bytes(raw["blockHash"]),
        tx_hash=_bytes(raw["transactionHash"]),
        tx_index=_int(raw["transactionIndex"]),
        log_index=_int(raw["logIndex"]),
        block_timestamp=None if stamp is None else _int(stamp),
    )


def _header(block: Mapping[str, Any]) -> BlockHeader:
    return BlockHeader(
        number=int(block["number"]),
        hash="0x" + bytes(block["hash"]).hex(),
        timestamp=int(block["timestamp"]),
    )


@dataclass
class PendingTx:
    """A transaction that has been sent; :meth:`receipt` waits for it."""

    chain: Chain
    tx_hash: HexBytes
    what: str
    _receipt: TxReceipt | None = field(default=None, repr=False)
    account: LocalAccount | None = field(default=None, repr=False)
    """The sender, kept so that a stuck transaction can be re-signed with higher fees."""
    fields: dict[str, Any] = field(default_factory=dict, repr=False)
    """The transaction as signed (nonce, fees, gas ...)."""
    hashes: list[HexBytes] = field(default_factory=list, repr=False)
    """Every hash sent under this nonce: the first and each replacement."""

    def receipt(self, timeout: float = 120.0) -> TxReceipt:
        """Wait for the transaction (or a replacement of it) to be mined and confirmed;
        raise the broken rule if it reverted."""
        if self._receipt is None:
            self._receipt = self.chain.wait_pending(self, timeout)
        return self._receipt

    @property
    def gas_used(self) -> int:
        return int(self.receipt()["gasUsed"])


class _Nonces:
    """Hands out nonces locally so several transactions can be in flight at once."""

    def __init__(self, w3: Web3, resync_after: float = 1.0) -> None:
        self._w3 = w3
        self._next: dict[str, int] = {}
        self._synced: dict[str, float] = {}
        self._unsent: dict[str, int] = {}
        self._hashes: dict[str, dict[int, bytes]] = {}
        self._lock = threading.Lock()
        self.resync_after = resync_after
        """Seconds after which the next take compares with the chain's pending nonce."""

    def _pending(self, address: str) -> int:
        return int(self._w3.eth.get_transaction_count(address, "pending"))  # type: ignore[arg-type]

    def take(self, address: str) -> int:
        """The next nonce of `address`; call :meth:`sent` once the transaction is handed
        over (or :meth:`forget` if it was not)."""
        with self._lock:
            now = time.monotonic()
            if address not in self._next:
                self._next[address] = self._pending(address)
                self._synced[address] = now
            elif (
                not self._unsent.get(address)
                and now - self._synced.get(address, 0.0) > self.resync_after
            ):
                # Every nonce handed out so far reached the node. If the node's pending
                # count is below ours, one of them left its pool without being mined
                # (dropped, evicted, the node restarted): a transaction under a later
                # nonce would wait forever behind the gap, so use the node's count.
                pending = self._pending(address)
                if pending < self._next[address] and not self._still_known(address, pending):
                    self._next[address] = pending
                    self._hashes.pop(address, None)
                self._synced[address] = now
            nonce = self._next[address]
            self._next[address] = nonce + 1
            self._unsent[address] = self._unsent.get(address, 0) + 1
            return nonce

    def _still_known(self, address: str, nonce: int) -> bool:
        """Whether the node still has the transaction we sent under `nonce` (a node
        behind a load balancer may answer a pending count that lags: then the gap is
        not real)."""
        tx_hash = self._hashes.get(address, {}).get(nonce)
        if tx_hash is None:
            return False
        try:
            self._w3.eth.get_transaction(HexBytes(tx_hash))
        except TransactionNotFound:
            return False
        return True

    def sent(self, address: str, nonce: int, tx_hash: bytes) -> None:
        """The transaction under `nonce` reached the node."""
        with self._lock:
            self._unsent[address] = max(0, self._unsent.get(address, 0) - 1)
        self.record(address, nonce, tx_hash)

    def record(self, address: str, nonce: int, tx_hash: bytes) -> None:
        """`tx_hash` is the latest transaction sent under `nonce` (a replacement)."""
        with self._lock:
            mine = self._hashes.setdefault(address, {})
            mine[nonce] = tx_hash
            if len(mine) > 256:  # only recent nonces can be in a gap
                for old in sorted(mine)[:-256]:
                    del mine[old]

    def forget(self, address: str) -> None:
        """Re-read the nonce from the chain next time (after a send failed or a
        transaction was dropped)."""
        with self._lock:
            self._next.pop(address, None)
            self._unsent[address] = max(0, self._unsent.get(address, 0) - 1)

    def dropped(self, address: str) -> None:
        """A transaction that reached the node vanished: re-read the nonce next time."""
        with self._lock:
            self._next.pop(address, None)


class Chain(ABC):
    """A connection to an EVM chain: sends signed transactions, reads state and logs."""

    backend = "rpc"

    def __init__(self, w3: Web3, url: str | None = None) -> None:
        self.w3 = w3
        try:
            self.chain_id = int(w3.eth.chain_id)
        except (OSError, Web3Exception) as exc:
            where = f" at {url}" if url else ""
            reason = _os_reason(exc)
            raise ChainUnreachable(f"cannot reach the chain{where}: {reason}", url) from exc
        self._nonces = _Nonces(w3)
        self._fee_cache: tuple[float, dict[str, int]] = (0.0, {})
        self.confirmations: int = max(1, _env_number("DATAGORA_CONFIRMATIONS", 1))
        """Blocks a receipt waits for (1: mined; 2: one more block on top, ...)."""
        self.priority_fee: int | None = (
            _env_number("DATAGORA_PRIORITY_FEE", 0)
            if os.environ.get("DATAGORA_PRIORITY_FEE", "").strip()
            else None
        )
        """The EIP-1559 tip in wei; None asks the node (``eth_maxPriorityFeePerGas``)."""
        self.base_fee_multiplier = 2
        """maxFeePerGas = latest base fee × this + tip: room for the base fee to rise
        for several full blocks before the transaction stops being includable."""
        self.replace_after: float | None = _env_number(
            "DATAGORA_REPLACE_AFTER", DEFAULT_REPLACE_AFTER, float
        )
        """Seconds a sent transaction may stay unmined before it is re-sent under the
        same nonce with fees raised by at least 12.5 % (None or 0: never)."""
        self.eip1559 = True
        """Send type-2 transactions when the chain has a base fee."""
        self.before_send: Callable[[str, int, int], None] | None = None
        """If set, called with (what, gas estimate, wei per gas now) before each
        transaction is signed; raising there sends nothing (the CLI shows the
        estimate and may ask to go on)."""

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def embedded() -> EmbeddedChain:
        """A fresh in-process chain (py-evm) with the development accounts funded."""
        return EmbeddedChain()

    @staticmethod
    def rpc(url: str, **options: Any) -> RpcChain:
        """A chain behind a JSON-RPC URL (anvil, a testnet, mainnet); `options` as
        :class:`RpcChain` takes them (confirmations, priority_fee, replace_after)."""
        return RpcChain(url, **options)

    # -- transactions -------------------------------------------------------------------
    def fees(self) -> dict[str, int]:
        """The fee fields of the next transaction: EIP-1559 (``type`` 2,
        ``maxFeePerGas`` = latest base fee × :attr:`base_fee_multiplier` + tip,
        ``maxPriorityFeePerGas`` = tip) on a chain with a base fee, else a legacy
        ``gasPrice``. Fetched at most every 2 s (fees move slowly)."""
        fetched_at, fees = self._fee_cache
        if fees and time.monotonic() - fetched_at <= 2.0:
            return dict(fees)
        try:
            fees = self._fetch_fees()
        except (OSError, Web3Exception) as exc:
            raise self._failed("reading the gas fees", exc, "the chain refused") from exc
        self._fee_cache = (time.monotonic(), fees)
        return dict(fees)

    def _fetch_fees(self) -> dict[str, int]:
        base = self.w3.eth.get_block("latest").get("baseFeePerGas") if self.eip1559 else None
        if base is None:
            return {"gasPrice": int(self.w3.eth.gas_price)}
        tip = self.priority_fee if self.priority_fee is not None else self._suggested_tip()
        return {
            "type": 2,
            "maxFeePerGas": int(base) * self.base_fee_multiplier + tip,
            "maxPriorityFeePerGas": tip,
        }

    def _suggested_tip(self) -> int:
        reply = self.w3.provider.make_request(RPCEndpoint("eth_maxPriorityFeePerGas"), [])
        result = reply.get("result") if isinstance(reply, Mapping) else None
        return DEFAULT_PRIORITY_FEE if result is None else _int(result)

    def fee_per_gas(self) -> int:
        """What one unit of gas costs now, in wei: base fee + tip, or the gas price."""
        fees = self.fees()
        if "gasPrice" in fees:
            return fees["gasPrice"]
        base = (fees["maxFeePerGas"] - fees["maxPriorityFeePerGas"]) // self.base_fee_multiplier
        return base + fees["maxPriorityFeePerGas"]

    def estimate(self, sender: str, tx: dict[str, Any], what: str) -> int:
        """Estimate gas; a revert becomes the matching :class:`ContractRuleError`."""
        try:
            return int(self.w3.eth.estimate_gas({**tx, "from": sender}))  # type: ignore[typeddict-item]
        except _REVERTS as exc:
            raise rule_error(what, _reason(exc)) from None
        except (OSError, Web3Exception) as exc:
            raise self._failed(what, exc, "the chain refused the estimate") from exc

    def _gas_for(self, sender: str, tx: dict[str, Any], what: str) -> int:
        """The gas limit for `tx`; raises the broken rule if it would revert."""
        return self.estimate(sender, tx, what) * 5 // 4 + 10_000

    def send(
        self, account: LocalAccount, tx: dict[str, Any], what: str, gas: int | None = None
    ) -> PendingTx:
        """Sign and send `tx` from `account` without waiting for it to be mined.

        Gas is estimated first (so a call that would revert raises here and nothing
        is sent) unless `gas` is given, for transactions that depend on others
        still in flight.
        """
        if gas is None:
            gas = self._gas_for(account.address, tx, what)
        if self.before_send is not None:
            try:
                estimate = self.estimate(account.address, tx, what)
            except ChainError:
                estimate = gas  # depends on transactions still in flight: the limit
            self.before_send(what, estimate, self.fee_per_gas())
        for attempt in (0, 1):
            with self._send_guard():
                full = {
                    **tx,
                    "from": account.address,
                    "gas": gas,
                    **self.fees(),
                    "chainId": self.chain_id,
                    "nonce": self._nonces.take(account.address),
                }
                signed = account.sign_transaction(full)
                try:
                    tx_hash = self._send_raw(bytes(signed.raw_transaction))
                except _REVERTS as exc:
                    # A node that runs the transaction as it takes it (Hardhat with
                    # automine) mines it reverted and still answers with an error.
                    # Mined, it is a sent transaction like on any other node: its
                    # nonce is used, and its receipt raises the broken rule (with the
                    # hash), so callers that send several and wait later see the
                    # failure where they would on anvil.
                    tx_hash = bytes(signed.hash)
                    try:
                        mined = self._known(HexBytes(tx_hash))
                    except (OSError, Web3Exception):
                        mined = None  # cannot tell: the error keeps the hash to look up
                    if not mined:
                        self._nonces.forget(account.address)
                        error = rule_error(what, _reason(exc))
                        if mined is None:
                            error.tx_hash = "0x" + tx_hash.hex()
                        raise error from None
                except ChainError as exc:
                    # Refused before it was accepted: the next send re-reads the nonce.
                    # "nonce too low" means another process used this account since we
                    # read it; the transaction was not taken, so sending again is safe.
                    self._nonces.forget(account.address)
                    refused = str(exc).lower()
                    if attempt == 0 and _BASE_FEE_REFUSAL.search(refused):
                        # "max fee per gas less than block base fee" (anvil, geth) or
                        # "... too low for the next block, which has a baseFeePerGas
                        # of ..." (Hardhat): the base fee rose since the fees were
                        # read; read them again and re-sign.
                        self._fee_cache = (0.0, {})
                        continue
                    if attempt == 0 and "nonce too low" in refused:
                        continue
                    raise
                except (OSError, Web3Exception, ValueError) as exc:
                    self._nonces.forget(account.address)
                    raise self._failed(what, exc, "the chain refused the transaction") from exc
                self._nonces.sent(account.address, int(full["nonce"]), tx_hash)
            return PendingTx(
                self,
                HexBytes(tx_hash),
                what,
                account=account,
                fields=full,
                hashes=[HexBytes(tx_hash)],
            )
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _send_raw(self, raw: bytes) -> bytes:
        return bytes(self.w3.eth.send_raw_transaction(raw))

    def _send_guard(self) -> AbstractContextManager[Any]:
        """Held from taking a nonce to handing the transaction over (see EmbeddedChain)."""
        return contextlib.nullcontext()

    def transact(
        self, account: LocalAccount, tx: dict[str, Any], what: str, gas: int | None = None
    ) -> TxReceipt:
        """Send `tx` and wait for its receipt."""
        return self.send(account, tx, what, gas).receipt()

    def wait(self, tx_hash: HexBytes, what: str, timeout: float = 120.0) -> TxReceipt:
        """Wait for the receipt of `tx_hash` (and :attr:`confirmations`)."""
        return self.wait_pending(PendingTx(self, tx_hash, what, hashes=[tx_hash]), timeout)

    def _find_receipt(self, tx_hash: HexBytes) -> TxReceipt | None:
        try:
            return self.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None

    def _known(self, tx_hash: HexBytes) -> bool:
        try:
            self.w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return False
        return True

    def wait_pending(self, pending: PendingTx, timeout: float = 120.0) -> TxReceipt:
        """Wait until one of `pending`'s hashes is mined under :attr:`confirmations`
        blocks; re-send it with higher fees each :attr:`replace_after` seconds it stays
        unmined; raise the broken rule if it reverted."""
        what = pending.what
        start = time.monotonic()
        deadline = start + timeout
        replace_at = (
            start + self.replace_after
            if self.replace_after and pending.account is not None and pending.fields
            else float("inf")
        )
        hashes = pending.hashes or [pending.tx_hash]
        delay = 0.005
        try:
            while True:
                receipt = next(
                    (r for h in list(hashes) if (r := self._find_receipt(h)) is not None), None
                )
                if receipt is not None:
                    confirmed = self._confirmed(receipt, deadline)
                    if confirmed is not None:
                        receipt = confirmed
                        break
                    continue  # reorganised away: look for it again
                now = time.monotonic()
                if now > deadline:
                    if not any(self._known(h) for h in hashes) and pending.account is not None:
                        # Gone from the node's pool: its nonce is free again.
                        self._nonces.dropped(pending.account.address)
                        raise ChainError(
                            f"{what}: the transaction was dropped by the node "
                            f"(never mined); send it again"
                        )
                    raise ChainError(f"{what}: not mined within {timeout:.0f} s")
                if now >= replace_at:
                    self._replace(pending)
                    hashes = pending.hashes
                    replace_at = time.monotonic() + float(self.replace_after or 0)
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
        except (OSError, Web3Exception) as exc:
            raise self._failed(what, exc, "waiting for the receipt failed") from exc
        pending.tx_hash = HexBytes(receipt["transactionHash"])
        if receipt["status"] != 1:
            error = rule_error(what, self._replay_reason(pending.tx_hash, receipt))
            error.tx_hash = "0x" + bytes(pending.tx_hash).hex()
            raise error
        return receipt

    def _confirmed(self, receipt: TxReceipt, deadline: float) -> TxReceipt | None:
        """`receipt` once it has :attr:`confirmations` blocks (re-read then, so a block
        that was reorganised away is noticed: None)."""
        if self.confirmations <= 1:
            return receipt
        target = int(receipt["blockNumber"]) + self.confirmations - 1
        delay = 0.01
        while self.block_number < target:
            if time.monotonic() > deadline:
                raise ChainError(
                    f"transaction 0x{bytes(receipt['transactionHash']).hex()} was mined but "
                    f"not confirmed by {self.confirmations} blocks in time"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        again = self._find_receipt(HexBytes(receipt["transactionHash"]))
        if again is None or again["blockHash"] != receipt["blockHash"]:
            return None
        return again

    def _replace(self, pending: PendingTx) -> None:
        """Re-sign `pending` under its nonce with fees at least 12.5 % higher (or the
        current fees, if higher still) and send it; the first one mined wins."""
        assert pending.account is not None
        old = pending.fields
        self._fee_cache = (0.0, {})
        try:
            now = self.fees()
        except ChainError:
            now = {}  # the bump alone, then; a failed read must not end the wait
        num, den = REPLACEMENT_BUMP
        fields = dict(old)
        for key in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas"):
            if key in old:
                fields[key] = max(-(-old[key] * num // den) + 1, now.get(key, 0))
        signed = pending.account.sign_transaction(fields)
        try:
            tx_hash = self._send_raw(bytes(signed.raw_transaction))
        except (ChainError, *_REVERTS):
            # "nonce too low" / "already known": the earlier one was mined or is
            # pending still; keep waiting for the hashes sent so far.
            return
        pending.fields = fields
        pending.hashes.append(HexBytes(tx_hash))
        self._nonces.record(pending.account.address, int(fields["nonce"]), tx_hash)

    def wait_all(self, pending: list[PendingTx], timeout: float = 120.0) -> list[TxReceipt]:
        """Wait for many transactions; raise the first broken rule among them."""
        return [p.receipt(timeout) for p in pending]

    def _replay_reason(self, tx_hash: HexBytes, receipt: TxReceipt) -> str:
        # A mined revert carries no reason; replaying the call at its block recovers it.
        tx = self.w3.eth.get_transaction(tx_hash)
        call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx["value"]}
        try:
            self.w3.eth.call(call, receipt["blockNumber"] - 1)  # type: ignore[arg-type]
        except _REVERTS as exc:
            return _reason(exc)
        except (OSError, Web3Exception):
            pass
        return "reverted (out of gas or no reason given)"

    def deploy(
        self, account: LocalAccount, abi: list[dict[str, Any]], bytecode: bytes, *args: Any
    ) -> str:
        """Deploy a contract and return its checksummed address."""
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        data = factory.constructor(*args).data_in_transaction
        receipt = self.transact(account, {"data": data}, "deploy")
        address = receipt["contractAddress"]
        if address is None:
            raise ChainError("deploy: the receipt has no contract address")
        return str(address)

    def call(self, fn: Any, what: str) -> Any:
        """Run a view function; a revert becomes the matching :class:`ContractRuleError`."""
        try:
            return fn.call()
        except _REVERTS as exc:
            raise rule_error(what, _reason(exc)) from None
        except (OSError, Web3Exception) as exc:
            raise self._failed(what, exc, "the call failed") from exc

    def code_at(self, address: str) -> bytes:
        """The contract code at `address` (empty if none)."""
        try:
            return bytes(self.w3.eth.get_code(address))  # type: ignore[arg-type]
        except (OSError, Web3Exception) as exc:
            raise self._failed(f"reading the code at {address}", exc, "the call failed") from exc

    def _failed(self, what: str, exc: BaseException, refused: str) -> ChainError:
        """The error for a request the chain did not answer: :class:`ChainUnreachable`
        (one line, the OS's reason) when the connection failed (web3's HTTP provider
        raises requests' connection errors, which are OSErrors), else a
        :class:`ChainError` saying `refused`."""
        if isinstance(exc, OSError):
            url = getattr(self, "url", None)
            where = f" at {url}" if url else ""
            return ChainUnreachable(
                f"{what}: cannot reach the chain{where}: {_os_reason(exc)}", url
            )
        return ChainError(f"{what}: {refused}: {exc}")

    # -- state --------------------------------------------------------------------------
    @property
    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def timestamp(self) -> int:
        """Timestamp of the latest block."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def balance(self, address: str) -> int:
        return int(self.w3.eth.get_balance(address))  # type: ignore[arg-type]

    def fund(self, address: str, wei: int) -> None:
        """Send native currency from development account 0 (development chains only)."""
        self.transact(dev_account(0), {"to": address, "value": wei}, "fund", gas=21_000)

    def transaction_receipt(self, tx_hash: bytes | str) -> TxReceipt:
        """The receipt of a mined transaction; :class:`ChainError` if the chain has none."""
        try:
            return self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except (OSError, Web3Exception, ValueError, TypeError) as exc:
            raise ChainError(f"no receipt for transaction {_hex(tx_hash)}: {exc}") from None

    # -- blocks -------------------------------------------------------------------------
    def block_hash(self, number: int) -> str | None:
        """The hash (``0x``-hex) of block `number`, or None if the chain has no such block."""
        try:
            return "0x" + bytes(self.w3.eth.get_block(number)["hash"]).hex()
        except BlockNotFound:
            return None

    def block_headers(self, numbers: Iterable[int]) -> dict[int, BlockHeader]:
        """The header of each block in `numbers`; :class:`ChainError` if one cannot be read."""
        return {n: self._block_header(n) for n in sorted(set(numbers))}

    def block_timestamps(self, numbers: Iterable[int]) -> dict[int, int]:
        """The timestamp of each block in `numbers` (batched on a JSON-RPC node)."""
        return {n: h.timestamp for n, h in self.block_headers(numbers).items()}

    def _block_header(self, number: int) -> BlockHeader:
        try:
            return _header(self.w3.eth.get_block(number))
        except (OSError, Web3Exception) as exc:
            raise ChainError(f"reading block {number} failed: {exc}") from exc

    # -- logs ---------------------------------------------------------------------------
    def get_logs(
        self,
        addresses: Sequence[str],
        topics: Sequence[Any] = (),
        start: int = 0,
        end: int | None = None,
        page: int | None = None,
    ) -> list[Log]:
        """The logs of `addresses` matching `topics` (``eth_getLogs`` positions: a
        ``0x``-hex topic, a list of alternatives, or None for any) in blocks
        `start`..`end` (default: latest), in chain order.

        Asked `page` blocks at a time; a range the node refuses as too large is
        halved and asked again. :class:`ChainError` if even one block fails.
        """
        if not addresses:
            return []
        last = self.block_number if end is None else end
        step = max(1, page if page is not None else last - start + 1)
        out: list[Log] = []
        for lo in range(start, last + 1, step):
            out += self._logs_halving(list(addresses), list(topics), lo, min(lo + step - 1, last))
        return out

    def _logs_halving(self, addresses: list[str], topics: list[Any], lo: int, hi: int) -> list[Log]:
        try:
            return self._logs(addresses, topics, lo, hi)
        except (OSError, Web3Exception, ValueError) as exc:
            if hi > lo and _RANGE_REFUSAL.search(str(exc)):
                mid = (lo + hi) // 2
                return self._logs_halving(addresses, topics, lo, mid) + self._logs_halving(
                    addresses, topics, mid + 1, hi
                )
            raise ChainError(f"reading logs of blocks {lo}..{hi} failed: {exc}") from exc

    def _logs(self, addresses: list[str], topics: list[Any], lo: int, hi: int) -> list[Log]:
        flt: Any = {"address": addresses, "fromBlock": lo, "toBlock": hi}
        if topics:
            flt["topics"] = topics
        return [_log(raw) for raw in self.w3.eth.get_logs(flt)]

    # -- views --------------------------------------------------------------------------
    def call_views(self, calls: Sequence[ViewCall]) -> list[int]:
        """Each one-word view ``{"to", "data"}`` read at the latest block, as an integer
        (one JSON-RPC batch on a node); :class:`ChainError` if any of them failed."""
        out = []
        for c in calls:
            try:
                result = self.w3.eth.call({"to": c["to"], "data": c["data"]})  # type: ignore[typeddict-item]
            except (*_REVERTS, OSError, Web3Exception) as exc:
                raise ChainError(f"a view of the ledger failed: {_reason(exc)}") from None
            value = word("0x" + bytes(result).hex())
            if value is None:
                raise ChainError("a view of the ledger failed")
            out.append(value)
        return out

    def view_batcher(self, view_batch: str | None = None) -> ViewBatcher:
        """A reader of view groups for an event loop (:meth:`call_views` in a worker
        thread; a JSON-RPC node coalesces concurrent groups into one batch, through
        the deployment's ``ViewBatch`` contract at `view_batch` if given)."""
        return ThreadedViews(self.call_views)

    # -- development-chain controls (tests, demo) --------------------------------------
    @abstractmethod
    def snapshot(self) -> Any:
        """Remember the chain's state (development chains only)."""

    @abstractmethod
    def revert(self, snapshot: Any) -> None:
        """Return to a state taken by :meth:`snapshot`."""

    @abstractmethod
    def advance_time(self, seconds: int) -> None:
        """Move the chain's clock forward and mine a block."""


class EmbeddedChain(Chain):
    """eth-tester on py-evm, in this process: zero set-up, one transaction per block."""

    backend = "embedded"

    def __init__(self) -> None:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider

        genesis = {
            bytes.fromhex(dev_account(i).address[2:]): {
                "balance": DEV_BALANCE_WEI,
                "nonce": 0,
                "code": b"",
                "storage": {},
            }
            for i in range(DEV_ACCOUNTS)
        }
        self.tester = EthereumTester(PyEVMBackend(genesis_state=genesis))
        provider = EthereumTesterProvider(self.tester)
        # eth-tester is not thread-safe; in-process nodes (the demo, tests) share this
        # chain from several threads, so every request to it is serialised.
        self.lock = threading.RLock()
        unlocked = provider.make_request

        def make_request(method: Any, params: Any) -> Any:
            with self.lock:
                return unlocked(method, params)

        provider.make_request = make_request  # type: ignore[method-assign]
        super().__init__(Web3(provider))
        # eth-tester runs calls from its own first account, which this genesis does not
        # fund; calls from a funded account avoid its "cannot afford gas" check.
        self.w3.eth.default_account = dev_account(0).address
        # One transaction per block, mined as it arrives: legacy fees, nothing to replace.
        self.eip1559 = False
        self.replace_after = None
        self.confirmations = 1  # blocks come only with transactions: nothing to wait for

    def _send_guard(self) -> AbstractContextManager[Any]:
        # eth-tester mines each transaction as it arrives and has no pool to queue a
        # nonce that comes early, so threads must hand theirs over in nonce order.
        return self.lock

    def _gas_for(self, sender: str, tx: dict[str, Any], what: str) -> int:
        # py-evm estimates gas by a binary search of trial runs; one call tells as
        # well whether the transaction would revert, and on this private chain a
        # generous limit costs nothing (receipts still report the gas used).
        try:
            self.w3.eth.call({**tx, "from": sender})  # type: ignore[typeddict-item]
        except _REVERTS as exc:
            raise rule_error(what, _reason(exc)) from None
        return EMBEDDED_GAS_LIMIT

    def snapshot(self) -> Any:
        with self.lock:
            return self.tester.take_snapshot()

    def revert(self, snapshot: Any) -> None:
        with self.lock:
            self.tester.revert_to_snapshot(snapshot)
        self._nonces = _Nonces(self.w3)

    def advance_time(self, seconds: int) -> None:
        with self.lock:
            self.tester.time_travel(self.timestamp() + seconds)
            self.tester.mine_blocks(1)


class RpcChain(Chain):
    """Any Ethereum JSON-RPC endpoint."""

    def __init__(
        self,
        url: str,
        timeout: float = 30.0,
        *,
        confirmations: int | None = None,
        priority_fee: int | None = None,
        replace_after: float | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"chain URL must start with http:// or https://, got {url!r}")
        self.url = url
        # web3 asks the node for its chain id before each contract call (two round
        # trips per view); a node's chain id does not change, so it is asked once.
        provider = Web3.HTTPProvider(
            url,
            request_kwargs={"timeout": timeout},
            cache_allowed_requests=True,
            cacheable_requests={RPCEndpoint("eth_chainId")},
        )
        super().__init__(Web3(provider), url)
        if confirmations is not None:
            if confirmations < 1:
                raise ConfigError(f"confirmations must be at least 1, got {confirmations}")
            self.confirmations = confirmations
        if priority_fee is not None:
            self.priority_fee = priority_fee
        if replace_after is not None:
            self.replace_after = replace_after
        # Sending is the hot path; one keep-alive connection without web3's
        # middleware stack costs a third of the time per transaction.
        self._http = httpx.Client(timeout=timeout, verify=verify_context())
        self._http_lock = threading.Lock()
        self._timeout = timeout
        self._rpc = jsonrpc.Connections(url, timeout)
        self._batches_work: bool | None = None

    def call_views(self, calls: Sequence[ViewCall]) -> list[int]:
        """``eth_call`` each view at the latest block, in ONE JSON-RPC batch.

        A lean path for hot reads (a proxy checks the ledger before every
        re-encryption): one keep-alive connection per thread, none of web3's or
        requests' per-call machinery (environment proxy lookups alone cost more
        than the call). :class:`ChainError` names the first call that failed.
        """
        replies = self._rpc.batch(jsonrpc.batch("eth_call", [[c, "latest"] for c in calls]))
        out = []
        for i, reply in enumerate(replies):
            if "error" in reply or "result" not in reply:
                raise ChainError(f"eth_call {i} of a batch failed: {reply.get('error')}")
            value = word(reply["result"])
            if value is None:
                raise ChainError(f"eth_call {i} of a batch answered no word: {reply['result']}")
            out.append(value)
        return out

    def view_batcher(self, view_batch: str | None = None) -> ViewBatcher:
        if not Http1Pool.supports(self.url):
            return super().view_batcher(view_batch)
        return CallCoalescer(self.url, self._timeout, view_batch=view_batch)

    def _send_raw(self, raw: bytes) -> bytes:
        try:
            with self._http_lock:
                result = jsonrpc.call(
                    self.url, "eth_sendRawTransaction", ["0x" + raw.hex()], client=self._http
                )
        except RpcError as exc:
            message = jsonrpc.error_message(exc.error)
            if "revert" in message:
                raise ContractLogicError(message) from None
            raise ChainError(f"the chain refused the transaction: {message}") from None
        except (httpx.HTTPError, ValueError) as exc:
            raise ChainUnreachable(
                f"cannot reach the chain at {self.url}: {_os_reason(exc)}", self.url
            ) from exc
        return bytes.fromhex(str(result).removeprefix("0x"))

    def _logs(self, addresses: list[str], topics: list[Any], lo: int, hi: int) -> list[Log]:
        flt: dict[str, Any] = {"address": addresses, "fromBlock": hex(lo), "toBlock": hex(hi)}
        if topics:
            flt["topics"] = topics
        # The raw reply: web3's result formatters (AttributeDict, HexBytes per
        # field) cost more than the node's own work on 10,000 logs.
        reply = self.w3.provider.make_request(RPCEndpoint("eth_getLogs"), [flt])
        if "error" in reply:
            raise ValueError(str(reply["error"]))
        return [_log(raw) for raw in reply["result"]]

    def block_headers(self, numbers: Iterable[int]) -> dict[int, BlockHeader]:
        """The header of each block, fetched in JSON-RPC batches (one by one if the
        node refuses a batch)."""
        wanted = sorted(set(numbers))
        headers: dict[int, BlockHeader] = {}
        try:
            for lo in range(0, len(wanted), _HEADERS_PER_BATCH):
                chunk = wanted[lo : lo + _HEADERS_PER_BATCH]
                with self.w3.batch_requests() as batch:
                    for number in chunk:
                        batch.add(self.w3.eth.get_block(number))
                    for number, block in zip(chunk, batch.execute(), strict=True):
                        headers[number] = _header(block)  # type: ignore[arg-type]
        except (OSError, Web3Exception, NotImplementedError, TypeError, KeyError):
            # A node that refuses JSON-RPC batches answers with one error object, which
            # web3 raises as its own error or fails to unpack (TypeError, KeyError), and
            # some providers cannot batch at all (NotImplementedError). Nothing is lost:
            # the headers still missing are read one by one, and a node that cannot
            # answer those either raises ChainError there.
            for number in wanted:
                if number not in headers:
                    headers[number] = self._block_header(number)
        return headers

    def wait_all(self, pending: list[PendingTx], timeout: float = 120.0) -> list[TxReceipt]:
        """Wait for many transactions, fetching receipts in JSON-RPC batches."""
        deadline = time.monotonic() + timeout
        waiting = [p for p in pending if p._receipt is None]
        stuck_at = time.monotonic() + (self.replace_after or timeout)
        unbatched = False
        while waiting and not unbatched and time.monotonic() < stuck_at:
            found: dict[bytes, TxReceipt] = {}
            for lo in range(0, len(waiting), 200):
                with self.w3.batch_requests() as batch:
                    for p in waiting[lo : lo + 200]:
                        batch.add(self.w3.eth.get_transaction_receipt(p.tx_hash))
                    try:
                        replies = batch.execute()
                    except (OSError, Web3Exception, NotImplementedError, TypeError, KeyError):
                        # Some not mined yet (web3 raises on a null receipt) - or the
                        # node refuses batches: then the waits below go one by one.
                        replies = []
                        if not self._receipt_batches_work():
                            unbatched = True
                for reply in replies:
                    if isinstance(reply, Mapping) and reply.get("transactionHash") is not None:
                        found[bytes(reply["transactionHash"])] = reply  # type: ignore[typeddict-item,assignment]
            for p in waiting:
                if bytes(p.tx_hash) in found:
                    p._receipt = found[bytes(p.tx_hash)]
            waiting = [p for p in waiting if p._receipt is None]
            if waiting:
                if time.monotonic() > deadline:
                    raise ChainError(
                        f"{len(waiting)} transactions not mined within {timeout:.0f} s"
                    )
                time.sleep(0.02)
        for p in [] if unbatched else waiting:
            # Unmined for replace_after: every one of them is re-sent with higher fees
            # now (then each wait below re-sends again every replace_after).
            if p.account is not None and p.fields:
                self._replace(p)
        if self.confirmations > 1:
            # Confirmations (and a reorganisation meanwhile) are checked one by one:
            # a setting for real networks, where blocks take seconds anyway.
            for p in pending:
                p._receipt = None
        for p in pending:
            # Those still unmined (stuck: re-sent with higher fees) or to confirm.
            receipt = p.receipt(max(1.0, deadline - time.monotonic()))
            if receipt["status"] != 1:
                raise rule_error(p.what, self._replay_reason(p.tx_hash, receipt))
        return [p.receipt() for p in pending]

    def _receipt_batches_work(self) -> bool:
        """Whether the node answers a JSON-RPC batch (asked once, remembered)."""
        if self._batches_work is None:
            probe = [jsonrpc.request("eth_blockNumber", [], 0)]
            try:
                self._batches_work = bool(self._rpc.batch(probe)) and not self._rpc.batches_refused
            except ChainError:
                self._batches_work = False
        return self._batches_work

    def _dev_rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
        if "error" in response:
            raise ChainError(f"{method} is not available on this chain: {response['error']}")
        return response.get("result")

    def snapshot(self) -> Any:
        return self._dev_rpc("evm_snapshot", [])

    def revert(self, snapshot: Any) -> None:
        if not self._dev_rpc("evm_revert", [snapshot]):
            raise ChainError(f"could not revert to snapshot {snapshot}")
        self._nonces = _Nonces(self.w3)

    def advance_time(self, seconds: int) -> None:
        self._dev_rpc("evm_increaseTime", [seconds])
        self._dev_rpc("evm_mine", [])


def _os_reason(exc: BaseException) -> str:
    """The operating system's reason in a connection error ("Connection refused"), not
    the HTTP library's page of wrapping; else the error's own text."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return found.group(1).strip() if found else str(exc)[:300]
