"""The base of the typed contract wrappers: one Python class per contract."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from eth_utils.abi import function_abi_to_4byte_selector, get_abi_input_types
from web3.types import TxReceipt

from datagora.ledger.chain import Chain, PendingTx
from datagora.ledger.compiler import compile_contract
from datagora.ledger.errors import InvalidArgument

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class Tx:
    """A mined transaction: its hash, block and gas."""

    tx_hash: str
    block_number: int
    gas_used: int

    @classmethod
    def of(cls, receipt: TxReceipt) -> Tx:
        return cls(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
        )


def check_address(value: str, what: str) -> str:
    """A checksummed, non-zero address, or :class:`InvalidArgument` naming `what`."""
    from web3 import Web3

    if not isinstance(value, str) or not Web3.is_address(value):
        raise InvalidArgument("bad address", f"{what}: {value!r} is not an address")
    checksummed = Web3.to_checksum_address(value)
    if checksummed == ZERO_ADDRESS:
        raise InvalidArgument("zero address", f"{what}: the zero address is not allowed")
    return str(checksummed)


def check_bytes32(value: bytes, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise InvalidArgument("bad bytes32", f"{what} must be exactly 32 bytes")
    return bytes(value)


class ContractWrapper:
    """A deployed contract; subclasses add one typed method per contract function."""

    contract_name: str = ""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = check_address(address, f"{self.contract_name} address")
        self._abi = compile_contract(self.contract_name).abi
        self._contract = chain.w3.eth.contract(address=self.address, abi=self._abi)  # type: ignore[call-overload]
        # Encoding calldata is on the hot path of every transaction: keep each
        # function's selector and argument types, keyed by name and arity.
        self._encoders: dict[tuple[str, int], tuple[bytes, list[str]]] = {}
        for f in self._abi:
            if f.get("type") == "function":
                abi: Any = f
                key = (str(f["name"]), len(f["inputs"]))
                self._encoders[key] = (
                    function_abi_to_4byte_selector(abi),
                    list(get_abi_input_types(abi)),
                )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address})"

    def prepare(self, function: str, *args: Any) -> dict[str, Any]:
        """The transaction fields (to, data) that call `function(*args)`.

        For sending many transactions without waiting (:meth:`Chain.send`); the
        typed methods below are the everyday interface.
        """
        try:
            selector, types = self._encoders[(function, len(args))]
        except KeyError:
            raise InvalidArgument(
                "no such function", f"{self.contract_name} has no {function}/{len(args)}"
            ) from None
        return {"to": self.address, "data": "0x" + (selector + abi_encode(types, args)).hex()}

    def _what(self, function: str) -> str:
        return f"{self.contract_name}.{function}"

    def _send(self, account: LocalAccount, function: str, *args: Any) -> PendingTx:
        return self.chain.send(account, self.prepare(function, *args), self._what(function))

    def _transact(self, account: LocalAccount, function: str, *args: Any) -> TxReceipt:
        return self._send(account, function, *args).receipt()

    def _view(self, function: str, *args: Any) -> Any:
        return self.chain.call(
            self._contract.get_function_by_name(function)(*args), self._what(function)
        )

    def find_events(
        self,
        event: str,
        *indexed: Any,
        start: int = 0,
        end: int | None = None,
        page: int | None = None,
    ) -> list[Any]:
        """This contract's `event` logs whose indexed arguments equal `indexed` (None:
        any; a list: any of its values), in blocks `start`..`end` (default: latest),
        asked `page` blocks at a time, decoded, in chain order. Filtered by the node
        through the log topics: a consumer's order is found without reading every event."""
        from eth_abi.abi import encode as encode_abi

        from datagora.ledger.events import decode_log

        handler = self._contract.events[event]()
        spec = next(e for e in self._abi if e.get("type") == "event" and e["name"] == event)
        kinds = [str(i["type"]) for i in spec["inputs"] if i.get("indexed")]
        topics: list[Any] = [
            handler.topic if handler.topic.startswith("0x") else "0x" + handler.topic
        ]
        for kind, value in zip(kinds, indexed, strict=False):
            if value is None:
                topics.append(None)
            elif isinstance(value, list):
                topics.append(["0x" + encode_abi([kind], [v]).hex() for v in value])
            else:
                topics.append("0x" + encode_abi([kind], [value]).hex())
        return [
            decode_log(handler, log, self.contract_name)
            for log in self.chain.get_logs([self.address], topics, start, end, page)
        ]

    def _decode(self, receipt: TxReceipt, event: str) -> list[dict[str, Any]]:
        """The `event` logs this contract emitted in `receipt`, decoded."""
        handler = self._contract.events[event]()
        out: list[dict[str, Any]] = []
        for log in receipt["logs"]:
            if (
                log["address"] == self.address
                and log["topics"]
                and (bytes(log["topics"][0]) == bytes.fromhex(handler.topic.removeprefix("0x")))
            ):
                out.append(dict(handler.process_log(log)["args"]))
        return out
