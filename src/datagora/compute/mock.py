"""Mock data: a synthetic table with a dataset's columns, made from its declared schema
and coarse, differentially private marginals — never a copied value.

Consumers write and test algorithms on the mock before paying (PySyft's pattern). A
mock is public, so it must not leak what the dataset keeps private: no name, ID or
other cell of the real table appears in it except by the chance that a value drawn
from a declared range equals one (a number, a category the owner declared).

How each column is drawn, on its own (the columns' joint distribution is not kept,
so no row is a real person's):

- the column's *type* comes from ``schema`` (``{"type": "int"}``, the types of the
  metadata's columns) or else from the frame's dtype;
- ``category``/``str`` with declared ``values``: drawn from those values with noisy
  frequencies; without declared values, synthetic tokens ``<column>-<number>`` (the
  real values are never read, so names and IDs cannot leak);
- ``bool``: noisy frequencies of true and false;
- ``int``/``float`` with declared ``bounds`` ``[lower, upper]``: a noisy histogram of
  ten equal bins over the bounds, a value drawn uniformly in a drawn bin; without
  bounds, a noisy histogram over fixed decades (0, ±(10^k, 10^(k+1)] for k from -3
  to 9), a value drawn log-uniformly in a drawn decade; ``int`` values are rounded;
- ``datetime``/``date`` with declared ``bounds`` (ISO dates): ten equal bins over
  them; without, decades from 1900 to 2100; ``date`` values are whole days;
- every column also has a noisy count of missing cells, kept as missing.

Privacy: each column's histogram (its bins plus "missing") changes by one in one bin
when one row is added or removed, so Laplace noise of scale ``1 / epsilon_column``
makes it epsilon_column-DP, with ``epsilon_column = epsilon / number of columns``
(sequential composition: the whole mock is `epsilon`-DP, 1.0 by default). Counts
below three noise scales are then dropped (post-processing, which costs nothing),
so that bins the data does not fill rarely appear. Bins and bounds never come from
the data. The number of rows is the caller's (default 100), not the table's. The
noise comes from fresh entropy unless `seed` is given (for tests: whoever knows the
seed can redraw the noise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from datagora.compute.errors import MockError

__all__ = ["make_mock"]

_TYPES: Final = ("int", "float", "bool", "str", "category", "datetime", "date")
_BINS: Final = 10
_DECADES: Final = range(-3, 10)
_THRESHOLD: Final = 3.0  # noise scales under which a noisy count is dropped
_NS_PER_DAY: Final = 86_400 * 10**9


def _type_of(series: pd.Series[Any]) -> str:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "str"


def _noisy(counts: np.ndarray[Any, Any], epsilon: float, rng: np.random.Generator) -> Any:
    """Laplace-noised counts, small ones dropped, as probabilities (uniform if none is left)."""
    scale = 1.0 / epsilon
    noisy = counts + rng.laplace(0.0, scale, size=counts.shape)
    noisy[noisy < _THRESHOLD * scale] = 0.0
    total = noisy.sum()
    return noisy / total if total > 0 else None


def _draw_bins(
    counts: np.ndarray[Any, Any], epsilon: float, rows: int, rng: np.random.Generator
) -> np.ndarray[Any, Any]:
    """Drawn bin indices; the last bin is "missing" (only drawn if its noisy count stays)."""
    p = _noisy(counts.astype(float), epsilon, rng)
    if p is None:  # nothing survived the noise: uniform over the non-missing bins
        p = np.r_[np.full(len(counts) - 1, 1.0 / (len(counts) - 1)), 0.0]
    return rng.choice(len(counts), size=rows, p=p)


def _numeric(
    values: np.ndarray[Any, Any],
    missing: int,
    bounds: tuple[float, float] | None,
    epsilon: float,
    rows: int,
    rng: np.random.Generator,
) -> np.ndarray[Any, Any]:
    """Floats drawn from a noisy histogram (NaN for missing)."""
    if bounds is not None:
        lower, upper = bounds
        edges = np.linspace(lower, upper, _BINS + 1)
        index = np.clip(
            np.searchsorted(edges, np.clip(values, lower, upper), "right") - 1, 0, _BINS - 1
        )
        counts = np.r_[np.bincount(index, minlength=_BINS), missing]
        drawn = _draw_bins(counts, epsilon, rows, rng)
        out = np.full(rows, np.nan)
        ok = drawn < _BINS
        out[ok] = rng.uniform(edges[drawn[ok]], edges[drawn[ok] + 1])
        return out
    # Decades: bin 0 is |v| < 10^-3, then +decades, then -decades.
    decades = len(_DECADES)
    magnitude = np.log10(np.maximum(np.abs(values), 1e-300))
    k = np.clip(np.floor(magnitude).astype(int) - _DECADES[0], 0, decades - 1)
    index = np.where(np.abs(values) < 10.0 ** _DECADES[0], 0, 1 + k + decades * (values < 0))
    counts = np.r_[np.bincount(index, minlength=1 + 2 * decades), missing]
    drawn = _draw_bins(counts, epsilon, rows, rng)
    out = np.full(rows, np.nan)
    zero = drawn == 0
    out[zero] = 0.0
    signed = (drawn > 0) & (drawn <= 2 * decades)
    exponent = (drawn[signed] - 1) % decades + _DECADES[0] + rng.random(int(signed.sum()))
    sign = np.where(drawn[signed] > decades, -1.0, 1.0)
    out[signed] = sign * 10.0**exponent
    return out


def _bounds(spec: Mapping[str, Any], name: str, dates: bool) -> tuple[float, float] | None:
    raw = spec.get("bounds")
    if raw is None:
        return None
    if not (isinstance(raw, Sequence) and len(raw) == 2):
        raise MockError(f"schema[{name!r}].bounds must be [lower, upper]")
    try:
        if dates:
            lower, upper = (float(pd.Timestamp(v).value) for v in raw)
        else:
            lower, upper = float(raw[0]), float(raw[1])
    except (TypeError, ValueError):
        raise MockError(f"schema[{name!r}].bounds must be [lower, upper]") from None
    if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
        raise MockError(f"schema[{name!r}].bounds must be finite with lower < upper")
    return lower, upper


def _column(
    name: str,
    series: pd.Series[Any],
    spec: Mapping[str, Any],
    epsilon: float,
    rows: int,
    rng: np.random.Generator,
) -> pd.Series[Any]:
    kind = spec.get("type") or _type_of(series)
    if kind not in _TYPES:
        raise MockError(f"schema[{name!r}].type must be one of {', '.join(_TYPES)}")
    present = series.notna().to_numpy()
    missing = int((~present).sum())
    if kind in ("str", "category", "bool"):
        values = list(spec.get("values", [False, True] if kind == "bool" else []))
        if not values:
            # Never read the values: synthetic tokens, with a noisy share of missing.
            counts = np.array([int(present.sum()), missing])
            drawn = _draw_bins(counts, epsilon, rows, rng)
            tokens = rng.integers(0, 10**6, size=rows)
            synthetic = [
                f"{name}-{t:06d}" if d == 0 else None for d, t in zip(drawn, tokens, strict=True)
            ]
            return pd.Series(synthetic, dtype="object")
        text = series.astype(str).to_numpy()
        counts = np.array([int((present & (text == str(v))).sum()) for v in values] + [missing])
        drawn = _draw_bins(counts, epsilon, rows, rng)
        picked = [values[d] if d < len(values) else None for d in drawn]
        if kind == "bool":
            return pd.Series(picked, dtype="boolean")
        return pd.Series(picked, dtype="category" if kind == "category" else "object")
    if kind in ("datetime", "date"):
        stamps = pd.to_datetime(series, errors="coerce")
        ok = stamps.notna().to_numpy()
        ns = stamps[ok].astype("datetime64[ns]").astype("int64").to_numpy(dtype=float)
        bounds = _bounds(spec, name, dates=True)
        if bounds is None:
            edges = [float(pd.Timestamp(f"{y}-01-01").value) for y in range(1900, 2101, 10)]
            index = np.clip(np.searchsorted(edges, ns, "right") - 1, 0, len(edges) - 2)
            counts = np.r_[np.bincount(index, minlength=len(edges) - 1), int((~ok).sum())]
            drawn = _draw_bins(counts, epsilon, rows, rng)
            out = np.full(rows, np.nan)
            fine = drawn < len(edges) - 1
            lo, hi = np.asarray(edges)[drawn[fine]], np.asarray(edges)[drawn[fine] + 1]
            out[fine] = rng.uniform(lo, hi)
        else:
            out = _numeric(ns, int((~ok).sum()), bounds, epsilon, rows, rng)
        if kind == "date":
            out = np.floor(out / _NS_PER_DAY) * _NS_PER_DAY
        return pd.Series(pd.to_datetime(pd.Series(out), unit="ns"))
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    ok = ~np.isnan(numbers)
    bounds = _bounds(spec, name, dates=False)
    drawn_values = _numeric(numbers[ok], int((~ok).sum()), bounds, epsilon, rows, rng)
    if kind == "int":
        drawn_values = np.rint(drawn_values)
        if bounds is not None:
            drawn_values = np.clip(drawn_values, math.ceil(bounds[0]), math.floor(bounds[1]))
        if not np.isnan(drawn_values).any():
            return pd.Series(drawn_values.astype("int64"))
        return pd.Series(drawn_values).astype("Int64")
    return pd.Series(drawn_values)


def make_mock(
    frame: pd.DataFrame,
    rows: int = 100,
    *,
    epsilon: float = 1.0,
    schema: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = None,
) -> pd.DataFrame:
    """A synthetic table with `frame`'s columns (same names, same order) and `rows`
    rows, `epsilon`-DP with respect to `frame`'s rows (see the module docstring).

    `schema` declares, per column, ``type`` (``int``, ``float``, ``bool``, ``str``,
    ``category``, ``datetime``, ``date``), ``bounds`` (``[lower, upper]``; ISO dates
    for dates) and ``values`` (the allowed values of a ``str``/``category`` column).
    Undeclared columns take their type from the dtype and have no bounds or values.
    """
    if rows < 0:
        raise MockError("rows must be ≥ 0")
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon > 0):
        raise MockError("epsilon must be a positive finite number")
    if len(frame.columns) == 0:
        raise MockError("cannot mock a table without columns")
    schema = schema or {}
    unknown = sorted(set(schema) - {str(c) for c in frame.columns})
    if unknown:
        raise MockError(f"the schema names columns the table does not have: {unknown}")
    rng = np.random.default_rng(seed)
    per_column = epsilon / len(frame.columns)
    columns = {
        name: _column(str(name), frame[name], schema.get(str(name), {}), per_column, rows, rng)
        for name in frame.columns
    }
    mock = pd.DataFrame({name: col.reset_index(drop=True) for name, col in columns.items()})
    mock.columns = frame.columns
    return mock
