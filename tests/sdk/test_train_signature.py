"""`Market.train` takes the arguments of the function it wraps, in the same order."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import datagora.market.compute as compute
from datagora.sdk import Market


def test_market_train_matches_the_function_it_wraps() -> None:
    sdk = list(inspect.signature(Market.train).parameters.values())[1:]  # after self
    wrapped = list(inspect.signature(compute.train).parameters.values())[1:]  # after market
    assert [(p.name, p.kind) for p in sdk] == [(p.name, p.kind) for p in wrapped]
    assert [p.default for p in sdk[2:]] == [p.default for p in wrapped[2:]]


def test_the_second_positional_argument_is_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(market: object, datasets: list[int], target: str, **kwargs: Any) -> str:
        seen.update(datasets=datasets, target=target, **kwargs)
        return "model"

    monkeypatch.setattr(compute, "train", fake)
    market = object.__new__(Market)  # no network: only the forwarding is under test
    assert Market.train(market, [1, 2], "label", rounds=1, timeout=5.0) == "model"
    assert seen["target"] == "label" and seen["rounds"] == 1 and seen["timeout"] == 5.0
    assert seen["algorithm"] is None
    with pytest.raises(TypeError):
        Market.train(market, [1], "label", "fedavg-logistic")  # type: ignore[misc]
