"""Federated logistic regression under differential privacy, one site's part (a datagora
compute algorithm for datasets whose owner requires DP; one of the node's trusted DP
algorithms, see :mod:`datagora.compute.algorithms`).

The job's signed ``params``: ``features`` (the columns), ``target`` (the label
column), ``dp`` (``{"epsilon": e, "bounds": {column: [lower, upper]}}``, which the
node checks and charges), optionally ``classes`` (the two label values, negative then
positive; default ``[0, 1]``), ``C`` and ``max_iter``.

The site trains one epsilon-DP logistic regression on its rows through the job's
privacy session — ``dp.session().logistic_regression(e, features)``: every feature
clipped to its declared bounds and mapped onto [-1, 1] (standardisation comes from
the declaration, never from the data), then diffprivlib's objective perturbation —
and writes ``weights.json``: ``coef`` and ``intercept`` in those [-1, 1] coordinates,
the declared ``classes`` and ``epsilon``, what the session spent. That is all that
leaves the site: no row count, no mean, no label value read from the data.

Labels come from the declaration, never from the data: a row whose label is the
declared positive class is 1, the declared negative class 0, any other row is left
out (a row-by-row filter, which keeps neighbouring tables neighbouring). Two fixed
rows — every feature at the middle of its bounds, one of each class — are added, so
the model always has both classes whatever the data holds (a job failing because a
site has one class only would itself tell something). Missing or non-numeric
feature cells take the middle of their bounds. An error inside the training is
reported by its type only: its text could quote a cell.

On a dataset whose owner does not require DP the site still trains under the job's
own declaration (nothing is charged there).

The noise is drawn from fresh system entropy: the consumer cannot choose a seed (a
known seed would let them reproduce the noise and subtract it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _declaration(params: dict[str, Any], session: Any, columns: Any) -> tuple[Any, ...]:
    """The features, target and classes the job declares, checked against the declared
    bounds and the table's column names (never its values): a ValueError says what is
    wrong, naming no data value."""
    features = [str(f) for f in params["features"]]
    target = str(params["target"])
    classes: Any = params.get("classes", [0, 1])
    ok = (
        isinstance(classes, list)
        and len(classes) == 2
        and all(isinstance(c, str | int | float) for c in classes)
        and classes[0] != classes[1]
    )
    if not ok:
        raise ValueError("classes must be the two label values, negative then positive: [0, 1]")
    missing = [f for f in [*features, target] if f not in columns]
    if missing:
        raise ValueError(f"the table has no columns {missing}")
    missing = [f for f in features if f not in session.bounds]
    if missing:
        raise ValueError(f"no declared bounds for features {missing}")
    return features, target, list(classes)


def _labels(column: Any, classes: list[Any]) -> Any:
    """1 for the declared positive class, 0 for the negative, NaN for any other value."""
    import numpy as np
    import pandas as pd

    out = np.full(len(column), np.nan)
    numeric = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    text = column.astype(str).to_numpy()
    for index, value in enumerate(classes):
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[numeric == float(value)] = index
        else:
            out[text == str(value)] = index
    return out


def _train(
    frame: Any,
    declared: tuple[Any, ...],
    session: Any,
    params: dict[str, Any],
    output_dir: Path,
) -> None:
    import numpy as np
    import pandas as pd

    features, target, classes = declared
    middle = {f: sum(session.bounds[f]) / 2 for f in features}
    x = pd.DataFrame(
        {f: pd.to_numeric(frame[f], errors="coerce").fillna(middle[f]) for f in features}
    )
    y = _labels(frame[target], classes)
    keep = ~np.isnan(y)
    anchors = pd.DataFrame([middle, middle], columns=features)
    x = pd.concat([x[keep], anchors], ignore_index=True)
    y = np.concatenate([y[keep], [0.0, 1.0]]).astype(int)
    model = session.logistic_regression(
        session.epsilon,
        features,
        C=float(params.get("C", 1.0)),
        max_iter=int(params.get("max_iter", 100)),
        random_state=None,
    )
    model.fit(x, y)
    step = model[-1]
    weights = {
        "coef": step.coef_.ravel().tolist(),
        "intercept": float(step.intercept_[0]),
        "classes": classes,
        "epsilon": session.spent,
    }
    (output_dir / "weights.json").write_text(json.dumps(weights))


def run(inputs: Any, params: dict[str, Any], output_dir: Path) -> None:
    from datagora.compute import dp

    (frame,) = (item.frame for item in inputs.values())
    session = dp.session_or_declared(params)
    declared = _declaration(params, session, frame.columns)
    try:
        _train(frame, declared, session, params, output_dir)
    except Exception as exc:
        # The type only: a message (and a chained traceback) could quote a cell. The
        # exception stays the context, so the runner still sees an epsilon overrun.
        raise RuntimeError(f"DP training failed ({type(exc).__name__})") from None
