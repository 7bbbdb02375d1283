"""The gas estimate the CLI shows before `publish` and `buy` send a transaction, and the
prompt that follows it only for a person at a terminal."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest
import typer

from datagora.cli.flows import _gas_shown, _native
from datagora.ledger import Chain, Ledger, dev_account

PAYER = dev_account(8)
TO = dev_account(9).address


@dataclass
class Market:
    ledger: Ledger


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(Ledger.embedded())


def _pay(chain: Chain) -> None:
    chain.transact(PAYER, {"to": TO, "value": 1}, "pay")


def test_the_estimate_is_one_line_before_sending(
    market: Market, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = market.ledger.chain
    with _gas_shown(market, yes=False, as_json=False) as gas:
        _pay(chain)
    line = capsys.readouterr().err.strip()
    assert line.startswith("gas estimate for pay: 21,000 gas × ") and line.endswith(" ETH")
    assert gas["gas"] == 21_000
    assert int(gas["wei"]) == 21_000 * int(gas["wei_per_gas"]) > 0
    assert chain.before_send is None  # only for the command's own transactions


def test_declining_at_a_terminal_sends_nothing(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = market.ledger.chain
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(typer, "confirm", lambda *a, **k: False)
    before = chain.w3.eth.get_transaction_count(PAYER.address)
    with pytest.raises(typer.Exit), _gas_shown(market, yes=False, as_json=False):
        _pay(chain)
    assert chain.w3.eth.get_transaction_count(PAYER.address) == before
    # --yes does not ask (and so sends).
    with _gas_shown(market, yes=True, as_json=False):
        _pay(chain)
    assert chain.w3.eth.get_transaction_count(PAYER.address) == before + 1


def test_without_a_terminal_it_never_asks(market: Market, monkeypatch: pytest.MonkeyPatch) -> None:
    def ask(*args: object, **kwargs: object) -> bool:
        raise AssertionError("asked without a terminal")

    monkeypatch.setattr(typer, "confirm", ask)
    with _gas_shown(market, yes=False, as_json=False):
        _pay(market.ledger.chain)  # pytest's stdin is not a terminal


def test_native_amounts() -> None:
    assert _native(21_000 * 10**9, 1) == "0.000021 ETH"
    assert _native(0, 137) == "0 POL"
    assert _native(10**18, 31337) == "1 ETH"


def test_json_mode_prints_nothing_but_counts(
    market: Market, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with _gas_shown(market, yes=False, as_json=True) as gas:
        _pay(market.ledger.chain)
    assert capsys.readouterr().err == ""
    assert gas["gas"] == 21_000


def test_the_embedded_chain_ignores_confirmations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAGORA_CONFIRMATIONS", "5")
    assert Chain.embedded().confirmations == 1
