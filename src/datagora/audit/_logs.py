"""Reading one dataset's logs with topic filters, and decoding them with the contracts' ABIs.

Most datagora events index the dataset id (the data NFT's ERC-721 events index it
as ``token_id``), so the node can select a dataset's logs itself: one
``eth_getLogs`` per position of that topic, over every contract whose ABI has
such an event, plus an address-only query for the dataset's own datatoken
(whose ERC-20 events carry no dataset). Contracts are discovered from the
deployment record and their ABIs, so a contract added later with a ``dataset``
topic is read without changes here. Decoding is done with ``eth_abi`` directly:
web3's per-log event processing costs more than the query itself on large
histories.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from datagora.audit.errors import AuditError, LogQueryError
from datagora.ledger import Chain, Event, Ledger, Log
from datagora.ledger.compiler import compile_contract
from datagora.ledger.errors import ChainError

DEFAULT_PAGE = 100_000
_PARALLEL = 4
_DATASET_TOPICS = {"dataset"}
_TOKEN_TOPICS = {"token_id", "tokenId"}  # ERC-721 events of the data NFT


@lru_cache(maxsize=4096)
def _checksum(address: str) -> str:
    return str(to_checksum_address(address))


def _canonical_type(item: Mapping[str, Any]) -> str:
    kind = str(item["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in item["components"])
        return f"({inner}){kind[5:]}"
    return kind


def _is_static(kind: str) -> bool:
    return kind not in ("string", "bytes") and not kind.endswith("]") and "(" not in kind


def _plain(kind: str, value: Any) -> Any:
    """Addresses checksummed (as web3 gives them), everything else as eth_abi decodes it."""
    if kind == "address":
        return _checksum(str(value))
    if kind.startswith("address[") and isinstance(value, (list, tuple)):
        return [_checksum(str(v)) for v in value]
    return value


_WORD = 32


def _word(kind: str, word: bytes) -> Any:
    if kind.startswith("uint"):
        return int.from_bytes(word, "big")
    if kind == "address":
        return _checksum("0x" + word[12:].hex())
    if kind == "bool":
        return word != bytes(_WORD)
    return word[: int(kind[5:])]  # bytesN


def _simple(kind: str) -> bool:
    return (
        kind.startswith("uint")
        or kind in ("address", "bool", "string", "bytes")
        or (kind.startswith("bytes") and kind[5:].isdigit())
    )


# Contracts whose every event belongs to every dataset's history.
_GLOBAL: frozenset[str] = frozenset({"AccessLog"})


def _decode_data(types: Sequence[str], data: bytes) -> Sequence[Any]:
    """ABI-decode event data: words sliced directly for the flat types events use
    (several times faster than eth_abi), eth_abi for anything else."""
    if not all(_simple(t) for t in types) or len(data) < _WORD * len(types):
        return [_plain(k, v) for k, v in zip(types, abi_decode(list(types), data), strict=True)]
    out: list[Any] = []
    for i, kind in enumerate(types):
        word = data[i * _WORD : (i + 1) * _WORD]
        if kind in ("string", "bytes"):
            offset = int.from_bytes(word, "big")
            size = int.from_bytes(data[offset : offset + _WORD], "big")
            value = data[offset + _WORD : offset + _WORD + size]
            if len(value) != size:
                raise ValueError("event data is shorter than its declared length")
            out.append(value.decode() if kind == "string" else value)
        else:
            out.append(_word(kind, word))
    return out


@dataclass(frozen=True)
class _EventAbi:
    name: str
    topic0: bytes
    indexed: tuple[tuple[str, str], ...]
    data_names: tuple[str, ...]
    data_types: tuple[str, ...]
    order: tuple[str, ...]  # argument names in declaration order

    @classmethod
    def of(cls, abi: Mapping[str, Any]) -> _EventAbi:
        inputs = list(abi["inputs"])
        signature = f"{abi['name']}({','.join(_canonical_type(i) for i in inputs)})"
        return cls(
            name=str(abi["name"]),
            topic0=keccak(text=signature),
            indexed=tuple((str(i["name"]), _canonical_type(i)) for i in inputs if i["indexed"]),
            data_names=tuple(str(i["name"]) for i in inputs if not i["indexed"]),
            data_types=tuple(_canonical_type(i) for i in inputs if not i["indexed"]),
            order=tuple(str(i["name"]) for i in inputs),
        )

    def decode(self, topics: Sequence[bytes], data: bytes) -> dict[str, Any] | None:
        """The event's arguments, or None if the log does not have this event's shape."""
        if len(topics) != len(self.indexed) + 1:
            return None
        args: dict[str, Any] = {}
        for (name, kind), topic in zip(self.indexed, topics[1:], strict=True):
            # An indexed dynamic value is stored as its hash: keep the hash.
            if not _is_static(kind):
                args[name] = topic
            elif _simple(kind):
                args[name] = _word(kind, topic)
            else:
                args[name] = _plain(kind, abi_decode([kind], topic)[0])
        if self.data_types:
            values = _decode_data(self.data_types, data)
            for name, value in zip(self.data_names, values, strict=True):
                args[name] = value
        elif data:
            return None
        return {name: args[name] for name in self.order}


@dataclass(frozen=True)
class _Query:
    addresses: tuple[str, ...]
    topics: tuple[Any, ...]


@dataclass(frozen=True)
class TimedEvent:
    """A decoded event and the timestamp of its block."""

    event: Event
    timestamp: int


class DatasetLogReader:
    """Finds and decodes every log of one dataset on one deployment."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.chain: Chain = ledger.chain
        # contract name -> topic0 -> event ABI
        self._events: dict[str, dict[bytes, _EventAbi]] = {}
        # (topic position of the dataset id) -> (addresses, topic0s)
        self._by_position: dict[int, tuple[set[str], set[bytes]]] = {}
        self._names: dict[str, str] = {}
        for name, address in ledger.deployment.contracts.items():
            if name == "Datatoken":
                continue  # the template: never a dataset's datatoken
            self._add_contract(name, _checksum(address))
        self._load_abi("Datatoken")

    def _load_abi(self, name: str) -> dict[bytes, _EventAbi]:
        if name not in self._events:
            abis = [_EventAbi.of(e) for e in compile_contract(name).abi if e["type"] == "event"]
            self._events[name] = {e.topic0: e for e in abis}
        return self._events[name]

    def _add_contract(self, name: str, address: str) -> None:
        self._names[address] = name
        wanted = _DATASET_TOPICS | (_TOKEN_TOPICS if name == "DataNFT" else set())
        for abi in self._load_abi(name).values():
            for position, (arg, kind) in enumerate(abi.indexed, start=1):
                if arg in wanted and kind.startswith("uint"):
                    addresses, topic0s = self._by_position.setdefault(position, (set(), set()))
                    addresses.add(address)
                    topic0s.add(abi.topic0)
                    break

    def queries(self, dataset: int, datatoken: str | None) -> list[_Query]:
        """The log filters that together select every log of `dataset`."""
        value = "0x" + dataset.to_bytes(32, "big").hex()
        out = []
        for position, (addresses, topic0s) in sorted(self._by_position.items()):
            topics: list[Any] = [sorted("0x" + t.hex() for t in topic0s)]
            topics += [None] * (position - 1) + [value]
            out.append(_Query(tuple(sorted(addresses)), tuple(topics)))
        if datatoken is not None:
            out.append(_Query((datatoken,), ()))
        # Proxies' access-log anchors cover every dataset they serve: all are history.
        out.extend(_Query((a,), ()) for a, name in self._names.items() if name in _GLOBAL)
        return out

    def read(
        self,
        dataset: int,
        datatoken: str | None,
        start: int,
        end: int,
        page: int = DEFAULT_PAGE,
    ) -> list[TimedEvent]:
        """Every event of `dataset` in blocks `start`..`end`, in chain order."""
        if datatoken is not None:
            self._names[datatoken] = "Datatoken"
        jobs = [
            (query, lo, min(lo + page - 1, end))
            for query in self.queries(dataset, datatoken)
            for lo in range(start, end + 1, page)
        ]
        raw: dict[tuple[int, int], Log] = {}
        # The queries are independent: in flight together, the node's time overlaps.
        with ThreadPoolExecutor(max_workers=min(_PARALLEL, len(jobs) or 1)) as pool:
            for logs in pool.map(lambda job: self._get_logs(*job), jobs):
                for log in logs:
                    raw[(log.block_number, log.log_index)] = log
        decoded = []
        for key in sorted(raw):
            event = self._decode(raw[key], dataset, datatoken)
            if event is not None:
                decoded.append(event)
        times = self._timestamps(raw, {e.block_number for e in decoded})
        return [TimedEvent(e, times[e.block_number]) for e in decoded]

    def _get_logs(self, query: _Query, lo: int, hi: int) -> list[Log]:
        try:
            return self.chain.get_logs(query.addresses, query.topics, lo, hi)
        except ChainError as exc:
            raise LogQueryError(str(exc)) from exc

    def _decode(self, log: Log, dataset: int, datatoken: str | None) -> Event | None:
        address = log.address
        contract = self._names.get(address)
        topics = log.topics
        if contract is None or not topics:
            return None
        abi = self._events[contract].get(topics[0])
        if abi is None:
            return None
        try:
            args = abi.decode(topics, log.data)
        except (DecodingError, ValueError) as exc:
            raise AuditError(
                f"log {log.log_index} of block {log.block_number} "
                f"does not decode as {contract}.{abi.name}: {exc}"
            ) from exc
        if args is None:
            return None
        if address != datatoken and contract not in _GLOBAL:
            # A topic filter matches by position only: keep what really names the dataset.
            ids = [args[n] for n, _ in abi.indexed if n in _DATASET_TOPICS | _TOKEN_TOPICS]
            if dataset not in ids:
                return None
        return Event(
            name=abi.name,
            contract=contract,
            address=address,
            block_number=log.block_number,
            tx_hash="0x" + log.tx_hash.hex(),
            log_index=log.log_index,
            args=args,
        )

    def _timestamps(self, raw: Mapping[tuple[int, int], Log], blocks: set[int]) -> dict[int, int]:
        times: dict[int, int] = {}
        for (block, _), log in raw.items():
            if log.block_timestamp is not None:
                times[block] = log.block_timestamp
        # Nodes that predate the `blockTimestamp` log field: one header per block.
        try:
            times.update(self.chain.block_timestamps(blocks - times.keys()))
        except ChainError as exc:
            raise LogQueryError(str(exc)) from exc
        return times
