"""A PyTorch ``Dataset`` over a downloaded table (needs PyTorch: its CPU build, see the README).

>>> import datagora as dg
>>> net = dg.connect()
>>> train = net.to_torch(7, target="diagnosis")          # doctest: +SKIP
>>> loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)

The table is held in memory as two tensors (features, target), built once: the
datasets a data scientist trains on from a notebook fit in memory, and indexing a
tensor is what a ``DataLoader`` wants. Only numeric and boolean columns can be
features; any other column must be dropped or encoded first, and the error says
which one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from datagora.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TabularDataset"]


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        # A bare `pip install torch` (or the datagora[torch] extra) from PyPI pulls
        # several GB of CUDA packages; the CPU build is all this adapter needs.
        raise ConfigError(
            "PyTorch is not installed: install the CPU build of PyTorch (see the README); "
            "a plain pip install of torch pulls several GB of CUDA packages"
        ) from None
    return torch


class TabularDataset:
    """Rows of a DataFrame as ``(features, target)`` tensor pairs (or ``features`` alone).

    ``target`` names the label column (``None``: unlabelled); ``features`` picks and
    orders the feature columns (default: every other column). Features are
    ``float32``; an integer or boolean target becomes ``int64`` (class labels), a
    float target ``float32``. It is a map-style dataset (``__len__`` and
    ``__getitem__``), which is all ``torch.utils.data.DataLoader`` asks of one.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        target: str | None = None,
        features: Sequence[str] | None = None,
    ) -> None:
        torch = _torch()
        import pandas as pd

        columns = [str(c) for c in frame.columns]
        if target is not None and target not in columns:
            raise ConfigError(f"no column {target!r} to use as target; columns: {columns}")
        chosen = list(features) if features is not None else [c for c in columns if c != target]
        missing = [c for c in chosen if c not in columns]
        if missing:
            raise ConfigError(f"no such feature column(s): {missing}; columns: {columns}")
        if target is not None and target in chosen:
            raise ConfigError(f"{target!r} is the target; it cannot be a feature too")
        if not chosen:
            raise ConfigError("no feature column left")
        for name in chosen:
            dtype = frame[name].dtype
            if not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)):
                raise ConfigError(
                    f"column {name!r} is {dtype}, not numeric: drop it or encode it first"
                )
        if frame[chosen].isna().to_numpy().any():
            raise ConfigError("the feature columns hold missing values: fill or drop them first")
        self.feature_names = chosen
        self.target_name = target
        self.features = torch.tensor(frame[chosen].to_numpy(dtype="float32"))
        self.target: Any = None
        if target is not None:
            column = frame[target]
            if column.isna().any():
                raise ConfigError(f"the target column {target!r} holds missing values")
            if pd.api.types.is_bool_dtype(column.dtype) or pd.api.types.is_integer_dtype(
                column.dtype
            ):
                self.target = torch.tensor(column.to_numpy(dtype="int64"))
            elif pd.api.types.is_float_dtype(column.dtype):
                self.target = torch.tensor(column.to_numpy(dtype="float32"))
            else:
                raise ConfigError(
                    f"the target {target!r} is {column.dtype}: encode it as numbers first"
                )

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, index: int) -> Any:
        if self.target is None:
            return self.features[index]
        return self.features[index], self.target[index]
