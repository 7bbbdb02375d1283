"""The PyTorch adapter: a real DataLoader over a real table, and a model that learns from it."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from datagora.errors import ConfigError
from datagora.torchdata import TabularDataset

torch = pytest.importorskip("torch", reason="PyTorch is not installed (make test installs it)")


def _cancer() -> pd.DataFrame:
    frame: pd.DataFrame = load_breast_cancer(as_frame=True).frame
    return frame


def test_a_dataloader_trains_a_classifier_on_the_adapter() -> None:
    frame = _cancer()
    data = TabularDataset(frame, target="target")
    assert len(data) == len(frame) == 569
    x, y = data[3]
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.shape == (30,) and int(y) == int(frame["target"].iloc[3])
    assert data.feature_names == [c for c in frame.columns if c != "target"]

    torch.manual_seed(0)
    mean, std = data.features.mean(0), data.features.std(0)
    model = torch.nn.Linear(30, 2)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    for _ in range(15):
        for xb, yb in loader:
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model((xb - mean) / std), yb)
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        predicted = model((data.features - mean) / std).argmax(1)
    accuracy = float((predicted == data.target).float().mean())
    assert accuracy > 0.95, accuracy


def test_feature_choice_float_target_and_unlabelled() -> None:
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "flag": [True, False, True]})
    regression = TabularDataset(frame, target="b", features=["flag", "a"])
    x, y = regression[1]
    assert x.tolist() == [0.0, 2.0] and y.dtype == torch.float32 and float(y) == 1.5
    unlabelled = TabularDataset(frame)
    assert unlabelled[2].tolist() == [3.0, 2.5, 1.0]


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (pd.DataFrame({"a": [1]}), {"target": "y"}, "no column 'y'"),
        (pd.DataFrame({"a": [1], "y": [0]}), {"target": "y", "features": ["z"]}, "no such"),
        (pd.DataFrame({"a": [1], "y": [0]}), {"target": "y", "features": ["y"]}, "target"),
        (pd.DataFrame({"a": ["x"], "y": [0]}), {"target": "y"}, "column 'a' is"),
        (pd.DataFrame({"a": [1.0, None], "y": [0, 1]}), {"target": "y"}, "missing"),
        (pd.DataFrame({"a": [1.0], "y": ["m"]}), {"target": "y"}, "encode it"),
        (pd.DataFrame({"y": [1]}), {"target": "y"}, "no feature column"),
    ],
)
def test_bad_tables_get_one_clear_error(
    frame: pd.DataFrame, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TabularDataset(frame, **kwargs)  # type: ignore[arg-type]
