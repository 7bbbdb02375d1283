"""Reading the ledger's events: block-range pagination, decoded into :class:`Event`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes

from datagora.ledger.chain import Chain, Log
from datagora.ledger.compiler import compile_contract

DEFAULT_PAGE = 2_000


@dataclass(frozen=True)
class Event:
    """One decoded event: which contract emitted what, where in the chain, with which fields."""

    name: str
    contract: str
    address: str
    block_number: int
    tx_hash: str
    log_index: int
    args: Mapping[str, Any]
    block_hash: str = ""
    """The hash (``0x``-hex) of the block the log was read from: a reader compares it
    with the block's header to notice a reorganisation between the two reads."""

    def __getitem__(self, key: str) -> Any:
        return self.args[key]


def web3_log(log: Log) -> dict[str, Any]:
    """`log` in the shape web3's event decoders (``process_log``) read."""
    return {
        "address": log.address,
        "topics": [HexBytes(t) for t in log.topics],
        "data": HexBytes(log.data),
        "blockNumber": log.block_number,
        "blockHash": HexBytes(log.block_hash),
        "transactionHash": HexBytes(log.tx_hash),
        "transactionIndex": log.tx_index,
        "logIndex": log.log_index,
    }


def decode_log(handler: Any, log: Log, contract: str) -> Event:
    """`log` decoded by a web3 event `handler` of `contract`."""
    decoded = handler.process_log(web3_log(log))
    return Event(
        name=str(decoded["event"]),
        contract=contract,
        address=log.address,
        block_number=log.block_number,
        tx_hash="0x" + log.tx_hash.hex(),
        log_index=log.log_index,
        args=dict(decoded["args"]),
        block_hash="0x" + log.block_hash.hex(),
    )


class EventReader:
    """Decodes the events of datagora's contracts, including every dataset's datatoken.

    Datatokens are learned from ``DatasetCreated`` events as the reader goes, so a
    clone that someone deployed outside the Factory is never taken for a datatoken.
    """

    def __init__(self, chain: Chain, contracts: Mapping[str, str]) -> None:
        self.chain = chain
        self._core = {addr: name for name, addr in contracts.items() if name != "Datatoken"}
        self._datatokens: set[str] = set()
        self._handlers: dict[str, dict[bytes, Any]] = {}
        for name in {*self._core.values(), "Datatoken"}:
            contract = chain.w3.eth.contract(abi=compile_contract(name).abi)
            events = [str(e["name"]) for e in compile_contract(name).abi if e["type"] == "event"]
            self._handlers[name] = {
                bytes.fromhex(contract.events[e]().topic.removeprefix("0x")): contract.events[e]()
                for e in events
            }

    def add_datatokens(self, addresses: list[str]) -> None:
        """Datatokens already known (e.g. from an index), when reading from a later block."""
        self._datatokens.update(addresses)

    def _logs(self, addresses: list[str], start: int, end: int) -> list[Log]:
        return self.chain.get_logs(addresses, (), start, end)

    def _decode(self, log: Log, contract: str) -> Event | None:
        if not log.topics:
            return None
        handler = self._handlers[contract].get(log.topics[0])
        if handler is None:
            return None
        return decode_log(handler, log, contract)

    def read(self, start: int, end: int | None = None, page: int = DEFAULT_PAGE) -> Iterator[Event]:
        """Yield every event from block `start` to `end` (default: latest), in chain order."""
        last = self.chain.block_number if end is None else end
        for lo in range(start, last + 1, page):
            hi = min(lo + page - 1, last)
            core = [
                e
                for log in self._logs(list(self._core), lo, hi)
                if (e := self._decode(log, self._core[log.address])) is not None
            ]
            for e in core:
                if e.name == "DatasetCreated":
                    self._datatokens.add(str(e.args["datatoken"]))
            tokens = [
                e
                for log in self._logs(sorted(self._datatokens), lo, hi)
                if (e := self._decode(log, "Datatoken")) is not None
            ]
            yield from sorted(core + tokens, key=lambda e: (e.block_number, e.log_index))
