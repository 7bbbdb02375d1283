"""Mock data: a synthetic, schema-preserving sample of a table, never a real row.

Consumers write and test algorithms on the mock before paying (PySyft's pattern).
Each column is drawn on its own, which breaks the joint distribution of real
records (no row is a real person's):

- categorical, text and boolean columns: values drawn from the observed values,
  with their observed frequencies;
- numeric columns: values drawn from the column (a shuffle with replacement) plus
  Gaussian noise of 10% of the column's standard deviation, kept inside the
  observed range; integer columns are rounded back to integers;
- dates and durations: drawn and jittered by 5% of the observed span (at least
  a day for dates);
- missing values keep their observed share.

Same columns, same order, same dtypes. Then every mock row that equals a real row
is redrawn (up to 50 times); if some still do, the table has too few distinct
values to mock and :class:`MockError` is raised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from datagora.compute.errors import MockError

__all__ = ["make_mock"]

_ATTEMPTS = 50


def _column(series: pd.Series[Any], n: int, rng: np.random.Generator) -> pd.Series[Any]:
    dtype = series.dtype
    present = series.dropna()
    missing_share = 1.0 - len(present) / len(series) if len(series) else 0.0
    if len(present) == 0:
        return pd.Series([series.iloc[0] if len(series) else None] * n, dtype=dtype)
    if (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(dtype)
        or pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
    ):
        counts = present.value_counts()
        values = rng.choice(len(counts), size=n, p=(counts / counts.sum()).to_numpy())
        out = pd.Series(counts.index.to_numpy()[values], dtype=dtype)
    elif pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        base = present.to_numpy()
        ints = base.view("int64") if base.dtype.kind in "mM" else present.astype("int64").to_numpy()
        drawn = rng.choice(ints, size=n)
        span = float(ints.max() - ints.min())
        unit, count = np.datetime_data(base.dtype)
        day = int(np.timedelta64(1, "D") / np.timedelta64(count, unit))  # type: ignore[call-overload]
        floor = day if pd.api.types.is_datetime64_any_dtype(dtype) else 1
        width = max(0.05 * span, floor)
        jittered = drawn + rng.normal(0.0, width, size=n).astype("int64")
        if base.dtype.kind == "M" and not (ints % day).any():
            jittered = jittered // day * day  # observed dates are whole days: keep them so
        out = pd.Series(jittered.astype(base.dtype), dtype=dtype)
    elif pd.api.types.is_numeric_dtype(dtype):
        values = present.to_numpy(dtype=float)
        drawn = rng.choice(values, size=n)
        std = float(values.std()) or 1.0
        noisy = np.clip(drawn + rng.normal(0.0, 0.1 * std, size=n), values.min(), values.max())
        if pd.api.types.is_integer_dtype(dtype):
            noisy = np.rint(noisy)
        out = pd.Series(noisy).astype(dtype)
    else:
        raise MockError(f"column {series.name!r} has a dtype ({dtype}) mock data cannot draw")
    if missing_share > 0:
        mask = rng.random(n) < missing_share
        out = out.mask(mask)
        if out.dtype != dtype:
            out = out.astype(dtype)
    return out


def _row_keys(frame: pd.DataFrame) -> pd.Series[Any]:
    return pd.util.hash_pandas_object(frame.astype(str), index=False)


def make_mock(frame: pd.DataFrame, rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """A synthetic table with `frame`'s schema and `rows` rows (default: as many as `frame`)."""
    n = len(frame) if rows is None else rows
    if n < 0:
        raise MockError("rows must be ≥ 0")
    if len(frame) == 0:
        raise MockError("cannot mock an empty table")
    rng = np.random.default_rng(seed)

    def draw(count: int) -> pd.DataFrame:
        return pd.DataFrame(
            {name: _column(frame[name], count, rng).to_numpy() for name in frame.columns}
        ).astype(frame.dtypes.to_dict())

    mock = draw(n)
    real = set(_row_keys(frame).tolist())
    for _ in range(_ATTEMPTS):
        clash = _row_keys(mock).isin(real).to_numpy()
        if not clash.any():
            break
        mock.loc[clash] = draw(int(clash.sum())).to_numpy()
        mock = mock.astype(frame.dtypes.to_dict())
    else:
        if _row_keys(mock).isin(real).any():
            raise MockError(
                "the table has too few distinct values: mock rows keep matching real rows"
            )
    mock.columns = frame.columns
    return mock.reset_index(drop=True)
