"""How datagora shows values to people, in one place: amounts, lists, booleans, times and
hashes.

Amounts of the market currency are integers of base units everywhere in code, on chain,
in ``--json`` output and in the SDK's raw fields; people read and type *tokens*
(18 decimals), shown with the currency symbol: ``format_amount(1_500_000_000_000_000_000)``
is ``"1.5 DGM"`` and ``parse_amount("1.5")`` is ``1_500_000_000_000_000_000``. The pair
round-trips exactly: no float is involved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final

from datagora.errors import ConfigError

SYMBOL: Final = "DGM"
"""The symbol of the market currency (the MarketToken every deployment creates)."""
DECIMALS: Final = 18
"""Decimals of the market currency (and of datatokens): base units per token = 10**18."""
_UNIT: Final = 10**DECIMALS

# A hex string of 40 digits (an address) or more (a hash), 0x-prefixed or bare (as in a
# `datagora://sha256/…` URI), not inside a longer word.
_LONG_HEX = re.compile(r"(?<![0-9A-Za-z])(?:0x)?[0-9a-fA-F]{40,}(?![0-9A-Za-z])")


def parse_amount(text: str | int | float | Decimal, what: str = "amount") -> int:
    """Tokens as people write them ("1.5", "2", "1.5 DGM") to base units.

    Refused with a :class:`ConfigError` that says why: not a number, negative, not
    finite, or finer than one base unit (more than 18 decimals)."""
    raw = str(text).strip()
    if raw.upper().endswith(SYMBOL):
        raw = raw[: -len(SYMBOL)].strip()
    try:
        value = Decimal(raw.replace("_", ""))
    except InvalidOperation:
        raise ConfigError(
            f"{what} {str(text)!r} is not a number of tokens (e.g. 1.5 for 1.5 {SYMBOL})"
        ) from None
    if not value.is_finite():
        raise ConfigError(f"{what} {str(text)!r} is not a finite number of tokens")
    if value < 0:
        raise ConfigError(f"{what} cannot be negative (got {text})")
    base = value * _UNIT
    if base != base.to_integral_value():
        raise ConfigError(f"{what} {str(text)!r} has more than {DECIMALS} decimals")
    return int(base)


def format_amount(base_units: int, symbol: str | None = SYMBOL) -> str:
    """Base units as tokens for people: ``"1.5 DGM"``, ``"0 DGM"``, ``"1000 DGM"``
    (exact; ``symbol=None`` leaves the symbol out, e.g. for datatokens)."""
    value = Decimal(int(base_units)).scaleb(-DECIMALS)
    text = format(value.normalize(), "f") if value else "0"
    return f"{text} {symbol}" if symbol else text


def format_list(items: Iterable[object], empty: str = "none") -> str:
    """``["medical", "cohort"]`` as ``"medical, cohort"`` (``empty`` when there are none)."""
    shown = [str(i) for i in items]
    return ", ".join(shown) if shown else empty


def format_bool(value: bool | None) -> str:
    """``yes`` or ``no`` (``-`` when unknown)."""
    return "-" if value is None else "yes" if value else "no"


def format_value(value: object) -> str:
    """Any plain value for people: yes/no, ``a, b`` lists, ``key value`` pairs, ``-`` for
    nothing, floats without noise (``0.25``, ``1.2e+06``); never Python's repr."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return format_bool(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Mapping):
        return format_list(f"{k} {format_value(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return format_list(format_value(v) for v in value)
    return str(value)


def format_time(moment: int | float | datetime) -> str:
    """Unix seconds (or a datetime) as UTC ISO 8601: ``2026-12-03T13:29:12Z``."""
    if isinstance(moment, datetime):
        when = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    else:
        when = datetime.fromtimestamp(moment, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def short_hex(value: str | bytes, keep: int = 4) -> str:
    """A hash or address for a table: ``0x1234…abcd``. Short values are kept whole;
    ``--json`` output always carries the full value."""
    text = "0x" + value.hex() if isinstance(value, bytes) else value
    prefix = "0x" if text.startswith("0x") else ""
    digits = text[len(prefix) :]
    if len(digits) <= 2 * keep + 1:
        return text
    return f"{prefix}{digits[:keep]}…{digits[-keep:]}"


def shorten_hexes(text: str, keep: int = 4) -> str:
    """Every address or hash inside `text` shortened (see :func:`short_hex`)."""
    return _LONG_HEX.sub(lambda m: short_hex(m.group(0), keep), text)
