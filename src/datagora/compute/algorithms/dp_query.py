"""Differentially private aggregate queries, evaluated by the node's trusted code with
OpenDP (a datagora compute algorithm; one of the node's trusted DP algorithms, see
:mod:`datagora.compute.algorithms`).

The job's signed ``params``::

    {"dp": {"epsilon": 1.0, "bounds": {"age": [0, 120], "weight": [0, 300]}},
     "queries": [{"op": "count"},
                 {"op": "sum", "column": "age"},
                 {"op": "mean", "column": "weight"}]}

``op`` is ``count`` (rows), ``sum`` or ``mean`` (of a column with declared bounds);
at most 32 queries. The declared epsilon (which the node checks and charges) is split
evenly over the measurements of one OpenDP query (sequential composition; a mean is
two: a sum and a count), under the privacy unit "one row" (one row added or
removed). Every value is clipped to its declared bounds and a missing or non-numeric
cell takes the middle of them, so nothing about the data decides a bound.
OpenDP needs a public bound on the table's length to bound the floating-point error
of a sum: it is :data:`MAX_ROWS` (10,000,000), fixed here rather than chosen by the
consumer (a bound below the real length would void the guarantee); a larger table
is refused.

The queries run through OpenDP's Context API on a Polars ``LazyFrame``; the noise is
OpenDP's (integer Laplace for the count, Laplace for sums; a mean is a noisy sum over
a noisy count). OpenDP serves these only after ``dp.enable_features("contrib")``:
its Polars integration and float sums are *contributed* components whose privacy
proofs have not finished OpenDP's own review yet. Writes ``results.json``::

    {"results": [{"op": "count", "value": 569}, ...], "epsilon": 1.0}

An error inside the evaluation is reported by its type only (its text could quote a
cell).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

MAX_QUERIES = 32
MAX_ROWS = 10_000_000
OPS = ("count", "sum", "mean")


def _queries(params: dict[str, Any], bounds: dict[str, tuple[float, float]]) -> list[Any]:
    queries = params.get("queries")
    if not isinstance(queries, list) or not 0 < len(queries) <= MAX_QUERIES:
        raise ValueError(f"queries must be a list of 1 to {MAX_QUERIES} queries")
    for query in queries:
        op = query.get("op") if isinstance(query, dict) else None
        if op not in OPS:
            raise ValueError(f"each query needs an op among {', '.join(OPS)}")
        if op != "count" and query.get("column") not in bounds:
            raise ValueError(f"a {op} query needs a column with declared bounds in dp.bounds")
    return queries


def _declaration(params: dict[str, Any], frame: Any) -> tuple[Any, list[Any], list[str]]:
    """The privacy session, the queries and the queried columns, checked against the
    declared bounds and the table's shape (never its values): a ValueError says what
    is wrong, naming no data value."""
    from datagora.compute import dp as privacy

    session = privacy.session_or_declared(params)
    queries = _queries(params, session.bounds)
    if len(frame) > MAX_ROWS:
        raise ValueError(f"dp-query serves tables of at most {MAX_ROWS} rows")
    columns = sorted({q["column"] for q in queries if q["op"] != "count"})
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ValueError(f"the table has no columns {absent}")
    return session, queries, columns


def _evaluate(frame: Any, session: Any, queries: list[Any], columns: list[str]) -> Any:
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    import pandas as pd
    import polars

    # Not opendp.prelude, which imports every extra (scikit-learn among them): the
    # Context API and the Polars extra are all this needs. Importing the extra adds
    # `.dp` to Polars expressions at run time, hence `pl` typed as Any.
    from opendp.context import Context, loss_of, unit_of
    from opendp.extras.polars import Margin
    from opendp.mod import enable_features

    pl: Any = polars
    middle = {c: sum(session.bounds[c]) / 2 for c in columns}
    # Only the queried columns, as floats; a cell that is not a number becomes the
    # middle of its bounds: a fixed, row-by-row rule.
    cells = pd.DataFrame(
        {c: pd.to_numeric(frame[c], errors="coerce").fillna(middle[c]) for c in columns},
        index=range(len(frame)),
    )
    data = pl.from_pandas(cells) if columns else pl.DataFrame({"_": [0] * len(frame)})
    enable_features("contrib")
    context = Context.compositor(
        data=data.lazy(),
        privacy_unit=unit_of(contributions=1),
        privacy_loss=loss_of(epsilon=session.epsilon),
        split_evenly_over=1,
        margins=[Margin(by=[], max_length=MAX_ROWS)],
    )
    exprs = []
    for k, query in enumerate(queries):
        if query["op"] == "count":
            expr = pl.len().dp.noise()
        else:
            column = query["column"]
            bounds = session.bounds[column]
            base = pl.col(column).cast(pl.Float64).fill_nan(middle[column])
            base = base.fill_null(middle[column])
            expr = base.dp.sum(bounds) if query["op"] == "sum" else base.dp.mean(bounds)
        exprs.append(expr.alias(f"q{k}"))
    # One OpenDP query: its measurements share the declared epsilon evenly.
    return context.query().select(*exprs).release().collect().row(0)


def run(inputs: Any, params: dict[str, Any], output_dir: Path) -> None:
    (frame,) = (item.frame for item in inputs.values())
    session, queries, columns = _declaration(params, frame)
    try:
        row = _evaluate(frame, session, queries, columns)
    except Exception as exc:
        # The type only: a message (and a chained traceback) could quote a cell.
        raise RuntimeError(f"the DP query failed ({type(exc).__name__})") from None
    results = []
    for query, value in zip(queries, row, strict=True):
        out = {"op": query["op"], "value": int(value) if query["op"] == "count" else float(value)}
        if query["op"] != "count":
            out["column"] = query["column"]
        results.append(out)
    if not all(math.isfinite(r["value"]) for r in results):
        raise RuntimeError("the DP query returned a value that is not finite")
    # The whole declared epsilon is spent (the compositor's budget), whatever was asked.
    session.accountant.spend(session.epsilon, 0)
    doc = {"results": results, "epsilon": session.epsilon}
    (output_dir / "results.json").write_text(json.dumps(doc))
