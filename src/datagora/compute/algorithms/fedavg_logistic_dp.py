"""Federated logistic regression under differential privacy, one site's part (a datagora
compute algorithm for datasets whose owner requires DP).

The job's signed ``params``: ``features`` (the columns), ``target`` (the label
column), ``dp`` (``{"epsilon": e, "bounds": {column: [lower, upper]}}``, which the
node checks and charges), and optionally ``C`` and ``max_iter``.

The site trains one epsilon-DP logistic regression on its rows through the job's
privacy session — ``dp.session().logistic_regression(e, features)``: every feature
clipped to its declared bounds and mapped onto [-1, 1] (standardisation comes from
the declaration, never from the data), then diffprivlib's objective perturbation —
and writes ``weights.json``: ``coef`` and ``intercept`` in those [-1, 1] coordinates
and ``epsilon``, what the session spent. That is all that leaves the site: no row
count, no mean, no other statistic. The coordinator therefore weights every site
equally.

On a dataset whose owner does not require DP the site still trains under the job's
own declaration (nothing is charged there).

The noise is drawn from fresh system entropy: the consumer cannot choose a seed (a
known seed would let them reproduce the noise and subtract it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def run(inputs: Any, params: dict[str, Any], output_dir: Path) -> None:
    from datagora.compute import dp

    (frame,) = (item.frame for item in inputs.values())
    features = [str(f) for f in params["features"]]
    session = dp.session_or_declared(params)
    model = session.logistic_regression(
        session.epsilon,
        features,
        C=float(params.get("C", 1.0)),
        max_iter=int(params.get("max_iter", 100)),
        random_state=None,
    )
    model.fit(frame[features], frame[params["target"]].to_numpy())
    step = model[-1]
    if len(step.classes_) != 2:
        raise ValueError(f"expected a binary target, got classes {list(step.classes_)}")
    weights = {
        "coef": step.coef_.ravel().tolist(),
        "intercept": float(step.intercept_[0]),
        "classes": [c.item() if hasattr(c, "item") else c for c in step.classes_],
        "epsilon": session.spent,
    }
    (output_dir / "weights.json").write_text(json.dumps(weights))
