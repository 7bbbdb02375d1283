"""The one formatting layer: amounts round-trip exactly, bad input is refused in one clear
line, and lists, booleans, times and hashes read as people expect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datagora.display import (
    SYMBOL,
    format_amount,
    format_bool,
    format_list,
    format_time,
    format_value,
    parse_amount,
    short_hex,
    shorten_hexes,
)
from datagora.errors import ConfigError


def test_amounts_for_people() -> None:
    assert format_amount(1_500_000_000_000_000_000) == f"1.5 {SYMBOL}"
    assert format_amount(0) == f"0 {SYMBOL}"
    assert format_amount(1000 * 10**18) == f"1000 {SYMBOL}"
    assert format_amount(1) == f"0.000000000000000001 {SYMBOL}"
    assert format_amount(10**18, None) == "1"
    assert parse_amount("1.5") == 1_500_000_000_000_000_000
    assert parse_amount(f"1.5 {SYMBOL}") == parse_amount("1.5")
    assert parse_amount("2") == 2 * 10**18
    assert parse_amount("0.000000000000000001") == 1


@given(st.integers(min_value=0, max_value=10**40))
def test_amounts_round_trip(base: int) -> None:
    assert parse_amount(format_amount(base)) == base
    assert parse_amount(format_amount(base, None)) == base


@given(st.decimals(min_value=0, max_value=10**12, places=18, allow_nan=False))
def test_tokens_round_trip(tokens: Decimal) -> None:
    assert Decimal(format_amount(parse_amount(str(tokens)), None)) == tokens


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("abc", "is not a number of tokens"),
        ("", "is not a number of tokens"),
        ("1.5 ETH", "is not a number of tokens"),
        ("-1", "cannot be negative"),
        ("nan", "not a finite number"),
        ("inf", "not a finite number"),
        ("0.0000000000000000001", "more than 18 decimals"),
    ],
)
def test_bad_amounts_are_refused_clearly(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        parse_amount(text, "--price")
    assert str(caught.value).startswith("--price")
    assert "\n" not in str(caught.value)


def test_lists_booleans_times_hashes() -> None:
    assert format_list(["medical", "cohort"]) == "medical, cohort"
    assert format_list([]) == "none"
    assert format_bool(True) == "yes" and format_bool(False) == "no" and format_bool(None) == "-"
    assert format_time(0) == "1970-01-01T00:00:00Z"
    moment = datetime(2026, 12, 3, 14, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_time(moment) == "2026-12-03T13:00:00Z"
    assert format_time(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    digest = "0x" + "1234" + "0" * 56 + "abcd"
    assert short_hex(digest) == "0x1234…abcd"
    assert short_hex(bytes.fromhex(digest[2:])) == "0x1234…abcd"
    assert short_hex("0x12") == "0x12"
    address = "0x" + "AB" * 20
    text = f"bought by {address} in {digest}; 0x12 stays"
    assert shorten_hexes(text) == "bought by 0xABAB…ABAB in 0x1234…abcd; 0x12 stays"
    uri = "datagora://sha256/" + "e" * 64
    assert shorten_hexes(f"metadata ({uri})") == "metadata (datagora://sha256/eeee…eeee)"
    assert shorten_hexes("word" + "a" * 40) == "word" + "a" * 40


def test_any_value_reads_without_python_repr() -> None:
    assert format_value(None) == "-" and format_value(True) == "yes"
    assert format_value(0.1 + 0.2) == "0.3" and format_value(1234567.0) == "1.23457e+06"
    assert format_value(["a", 1, False]) == "a, 1, no"
    assert format_value({"p50": 0.25, "ok": True}) == "p50 0.25, ok yes"
    assert format_value([]) == "none"
