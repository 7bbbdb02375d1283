"""Access conditions: a small tree of rules a proxy checks before each answer it gives.

A dataset's controller sets one condition per datatoken service on the
AccessRegistry (``set_condition``); the chain keeps its encoding (at most
:data:`MAX_BYTES` bytes) and the keccak-256 of it. Without a condition the rule
is the order/grant rule (:class:`Order`). The text grammar, the binary format and
the evaluation rules are written down in ``docs/ledger.md`` ("Access conditions").

This module is pure: parsing, rendering, encoding, decoding, and evaluating a tree
against :class:`Facts` read from the chain by the caller (the proxies' gate).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from eth_utils.address import to_checksum_address

from datagora.ledger.errors import InvalidArgument

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_LEAVES",
    "VERSION",
    "AllOf",
    "AllowList",
    "AnyOf",
    "Condition",
    "Erc20",
    "Erc721",
    "Facts",
    "NotAfter",
    "NotBefore",
    "Order",
    "TokenRead",
    "decode",
    "encode",
    "failure",
    "parse",
    "render",
    "token_reads",
]

VERSION: Final = 1
MAX_BYTES: Final = 512
MAX_LEAVES: Final = 8
MAX_DEPTH: Final = 4
"""At most this many nested AND/OR levels."""

_ORDER, _ALLOW, _NOT_BEFORE, _NOT_AFTER, _ERC20, _ERC721, _ERC721_ID = range(1, 8)
_AND, _OR = 0x10, 0x11
_U64: Final = 2**64
_U256: Final = 2**256


@dataclass(frozen=True, slots=True)
class Order:
    """The order/grant rule: a valid order for the service, a live grant, or the allow-list."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """The consumer is on the dataset's allow-list."""


@dataclass(frozen=True, slots=True)
class NotBefore:
    """The block time is at least ``at`` (unix seconds)."""

    at: int


@dataclass(frozen=True, slots=True)
class NotAfter:
    """The block time is before ``at`` (unix seconds)."""

    at: int


@dataclass(frozen=True, slots=True)
class Erc20:
    """The consumer holds at least ``amount`` (base units) of the ERC-20 ``token``."""

    token: str
    amount: int


@dataclass(frozen=True, slots=True)
class Erc721:
    """The consumer holds an NFT of ``token`` (``token_id`` None: any, else that one)."""

    token: str
    token_id: int | None = None


@dataclass(frozen=True, slots=True)
class AllOf:
    terms: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    terms: tuple[Condition, ...]


Leaf = Order | AllowList | NotBefore | NotAfter | Erc20 | Erc721
Condition = Leaf | AllOf | AnyOf
TokenRead = Erc20 | Erc721


def _bad(detail: str) -> InvalidArgument:
    return InvalidArgument("bad access condition", detail)


# -- text ------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")
_ERC20_TEXT = re.compile(r"erc20:(0x[0-9a-fA-F]{40})>=(\d+)", re.IGNORECASE)
_ERC721_TEXT = re.compile(r"erc721:(0x[0-9a-fA-F]{40})(?:#(\d+))?", re.IGNORECASE)


def _time(text: str, what: str) -> int:
    if text.isdigit():
        value = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise _bad(
                f"{what}:{text} is not a date (YYYY-MM-DD, an ISO time, or unix seconds)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        value = int(moment.timestamp())
    if not 0 < value < _U64:
        raise _bad(f"{what}:{text} is out of range")
    return value


def _leaf(word: str) -> Leaf:
    lower = word.lower()
    if lower == "order":
        return Order()
    if lower == "allowlist":
        return AllowList()
    if lower.startswith("after:"):
        return NotBefore(_time(word[6:], "after"))
    if lower.startswith("before:"):
        return NotAfter(_time(word[7:], "before"))
    if m := _ERC20_TEXT.fullmatch(word):
        amount = int(m.group(2))
        if not 0 < amount < _U256:
            raise _bad(f"{word}: the amount must be between 1 and 2**256-1")
        return Erc20(to_checksum_address(m.group(1)), amount)
    if m := _ERC721_TEXT.fullmatch(word):
        token_id = None if m.group(2) is None else int(m.group(2))
        if token_id is not None and token_id >= _U256:
            raise _bad(f"{word}: the token id is out of range")
        return Erc721(to_checksum_address(m.group(1)), token_id)
    raise _bad(
        f"unknown term {word!r} (expected order, allowlist, after:DATE, before:DATE, "
        "erc20:0xTOKEN>=AMOUNT, erc721:0xTOKEN or erc721:0xTOKEN#ID)"
    )


class _Parser:
    def __init__(self, text: str) -> None:
        text = re.sub(r"\s*>=\s*", ">=", text.strip())
        self.tokens: list[str] = []
        at = 0
        while at < len(text):
            m = _TOKEN.match(text, at)
            if m is None:  # only trailing blanks are left
                break
            self.tokens.append(m.group(1))
            at = m.end()
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self) -> str:
        word = self.peek()
        if word is None:
            raise _bad("the condition ends too early")
        self.at += 1
        return word

    def expr(self) -> Condition:
        terms = [self.term()]
        while (word := self.peek()) is not None and word.upper() == "OR":
            self.at += 1
            terms.append(self.term())
        return terms[0] if len(terms) == 1 else AnyOf(tuple(terms))

    def term(self) -> Condition:
        factors = [self.factor()]
        while (word := self.peek()) is not None and word.upper() == "AND":
            self.at += 1
            factors.append(self.factor())
        return factors[0] if len(factors) == 1 else AllOf(tuple(factors))

    def factor(self) -> Condition:
        word = self.take()
        if word == "(":
            inner = self.expr()
            if self.take() != ")":
                raise _bad("a '(' is not closed")
            return inner
        if word == ")" or word.upper() in ("AND", "OR"):
            raise _bad(f"unexpected {word!r}")
        return _leaf(word)


def _flatten(cond: Condition) -> Condition:
    """Merge nested ANDs into one AND (ORs likewise): ``a AND (b AND c)`` is ``a AND b AND c``."""
    if isinstance(cond, AllOf | AnyOf):
        kind = type(cond)
        terms: list[Condition] = []
        for t in cond.terms:
            flat = _flatten(t)
            terms.extend(flat.terms if isinstance(flat, kind) else (flat,))
        return kind(tuple(terms))
    return cond


def parse(text: str) -> Condition:
    """The condition ``text`` states (grammar in ``docs/ledger.md``), checked against the
    limits; :class:`InvalidArgument` says what is wrong."""
    parser = _Parser(text)
    if not parser.tokens:
        raise _bad("the condition is empty")
    cond = parser.expr()
    if parser.peek() is not None:
        raise _bad(f"unexpected {parser.peek()!r}")
    cond = _flatten(cond)
    encode(cond)  # checks the limits
    return cond


def _date(at: int) -> str:
    try:
        moment = datetime.fromtimestamp(at, UTC)
    except (OverflowError, OSError, ValueError):  # past year 9999: plain unix seconds
        return str(at)
    if moment.hour == moment.minute == moment.second == 0:
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def render(cond: Condition, *, top: bool = True) -> str:
    """``cond`` in the text grammar (``parse(render(c)) == c``)."""
    match cond:
        case Order():
            return "order"
        case AllowList():
            return "allowlist"
        case NotBefore(at):
            return f"after:{_date(at)}"
        case NotAfter(at):
            return f"before:{_date(at)}"
        case Erc20(token, amount):
            return f"erc20:{token}>={amount}"
        case Erc721(token, None):
            return f"erc721:{token}"
        case Erc721(token, token_id):
            return f"erc721:{token}#{token_id}"
        case AllOf(terms):
            text = " AND ".join(render(t, top=False) for t in terms)
        case AnyOf(terms):
            text = " OR ".join(render(t, top=False) for t in terms)
    return text if top else f"({text})"


# -- bytes -----------------------------------------------------------------------------
def _leaves(cond: Condition) -> Iterator[Leaf]:
    if isinstance(cond, AllOf | AnyOf):
        for t in cond.terms:
            yield from _leaves(t)
    else:
        yield cond


def _depth(cond: Condition) -> int:
    if isinstance(cond, AllOf | AnyOf):
        return 1 + max(_depth(t) for t in cond.terms)
    return 0


def _encode(cond: Condition) -> bytes:
    match cond:
        case Order():
            return bytes([_ORDER])
        case AllowList():
            return bytes([_ALLOW])
        case NotBefore(at):
            return bytes([_NOT_BEFORE]) + at.to_bytes(8, "big")
        case NotAfter(at):
            return bytes([_NOT_AFTER]) + at.to_bytes(8, "big")
        case Erc20(token, amount):
            return bytes([_ERC20]) + bytes.fromhex(token[2:]) + amount.to_bytes(32, "big")
        case Erc721(token, None):
            return bytes([_ERC721]) + bytes.fromhex(token[2:])
        case Erc721(token, int(token_id)):
            return bytes([_ERC721_ID]) + bytes.fromhex(token[2:]) + token_id.to_bytes(32, "big")
        case AllOf(terms) | AnyOf(terms):
            op = _AND if isinstance(cond, AllOf) else _OR
            return bytes([op, len(terms)]) + b"".join(_encode(t) for t in terms)
    raise _bad(f"not a condition: {cond!r}")


def _check(cond: Condition) -> None:
    leaves = sum(1 for _ in _leaves(cond))
    if leaves > MAX_LEAVES:
        raise _bad(f"the condition has {leaves} terms; at most {MAX_LEAVES} are allowed")
    if _depth(cond) > MAX_DEPTH:
        raise _bad(f"the condition nests AND/OR deeper than {MAX_DEPTH} levels")
    for node in _nodes(cond):
        if isinstance(node, AllOf | AnyOf) and len(node.terms) < 2:
            raise _bad("an AND or OR needs at least two terms")


def _nodes(cond: Condition) -> Iterator[Condition]:
    yield cond
    if isinstance(cond, AllOf | AnyOf):
        for t in cond.terms:
            yield from _nodes(t)


def encode(cond: Condition) -> bytes:
    """The on-chain encoding of ``cond`` (version byte, then the tree in prefix order)."""
    _check(cond)
    blob = bytes([VERSION]) + _encode(cond)
    if len(blob) > MAX_BYTES:
        raise _bad(f"the condition encodes to {len(blob)} bytes; at most {MAX_BYTES} fit")
    return blob


def decode(blob: bytes) -> Condition:
    """The condition ``blob`` encodes; :class:`InvalidArgument` if it is malformed or breaks
    a limit (a proxy refuses access under a condition it cannot read)."""
    if not blob or blob[0] != VERSION:
        raise _bad("unknown condition format")
    if len(blob) > MAX_BYTES:
        raise _bad("the condition is too long")

    def node(at: int, depth: int) -> tuple[Condition, int]:
        if at >= len(blob):
            raise _bad("the condition is truncated")
        op = blob[at]
        sizes = {_ORDER: 0, _ALLOW: 0, _NOT_BEFORE: 8, _NOT_AFTER: 8, _ERC20: 52, _ERC721: 20}
        sizes[_ERC721_ID] = 52
        if op in (_AND, _OR):
            if depth >= MAX_DEPTH or at + 1 >= len(blob):
                raise _bad("the condition nests too deep or is truncated")
            count, at = blob[at + 1], at + 2
            terms = []
            for _ in range(count):
                term, at = node(at, depth + 1)
                terms.append(term)
            return (AllOf if op == _AND else AnyOf)(tuple(terms)), at
        if op not in sizes:
            raise _bad(f"unknown condition term {op:#04x}")
        body = blob[at + 1 : at + 1 + sizes[op]]
        if len(body) != sizes[op]:
            raise _bad("the condition is truncated")
        end = at + 1 + sizes[op]
        if op == _ORDER:
            return Order(), end
        if op == _ALLOW:
            return AllowList(), end
        if op in (_NOT_BEFORE, _NOT_AFTER):
            t = int.from_bytes(body, "big")
            return (NotBefore(t) if op == _NOT_BEFORE else NotAfter(t)), end
        token = to_checksum_address(body[:20])
        if op == _ERC20:
            return Erc20(token, int.from_bytes(body[20:], "big")), end
        if op == _ERC721:
            return Erc721(token), end
        return Erc721(token, int.from_bytes(body[20:], "big")), end

    cond, end = node(1, 0)
    if end != len(blob):
        raise _bad("the condition has trailing bytes")
    _check(cond)
    return cond


# -- evaluation ------------------------------------------------------------------------
def token_reads(cond: Condition) -> list[TokenRead]:
    """The token holdings ``cond`` depends on, each once, in tree order."""
    seen: list[TokenRead] = []
    for leaf in _leaves(cond):
        if isinstance(leaf, Erc20 | Erc721) and leaf not in seen:
            seen.append(leaf)
    return seen


@dataclass(frozen=True, slots=True)
class Facts:
    """What a condition is evaluated against, all read at one block.

    ``holdings`` maps each token read to the ERC-20 balance, the ERC-721 balance, or
    (for an NFT id) 1 if the consumer owns it and 0 if not; a read that failed is
    missing and its term does not hold.
    """

    consumer: str
    now: int
    ordered: bool
    allow_listed: bool
    holdings: Mapping[TokenRead, int]


def _leaf_failure(leaf: Leaf, facts: Facts) -> str | None:
    match leaf:
        case Order():
            return None if facts.ordered else "no valid order or grant"
        case AllowList():
            return None if facts.allow_listed else "not on the allow-list"
        case NotBefore(at):
            return None if facts.now >= at else f"not open before {_date(at)}"
        case NotAfter(at):
            return None if facts.now < at else f"closed since {_date(at)}"
        case Erc20(_, amount):
            held = facts.holdings.get(leaf)
            if held is None:
                return "the token balance could not be read"
            return None if held >= amount else f"holds {held}, needs {amount}"
        case Erc721(_, token_id):
            held = facts.holdings.get(leaf)
            if held is None:
                return "the NFT holding could not be read"
            if held >= 1:
                return None
            return "holds no such NFT" if token_id is None else f"does not own NFT {token_id}"


def failure(cond: Condition, facts: Facts) -> str | None:
    """None if ``cond`` holds for ``facts``, else which terms failed and why."""
    match cond:
        case AllOf(terms):
            for t in terms:
                if (why := failure(t, facts)) is not None:
                    return why
            return None
        case AnyOf(terms):
            reasons = []
            for t in terms:
                why = failure(t, facts)
                if why is None:
                    return None
                reasons.append(why)
            return "none of: " + "; ".join(reasons)
    why = _leaf_failure(cond, facts)
    return None if why is None else f"{render(cond)} ({why})"
