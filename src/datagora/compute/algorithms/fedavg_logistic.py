"""Federated logistic regression, one site's part (a datagora compute algorithm).

``params["mode"]``:

- ``"stats"``: writes ``stats.json`` — the row count and per-feature sums and sums of
  squares (aggregates only), from which the coordinator standardises globally;
- ``"train"``: standardises with the coordinator's ``mean``/``scale``, starts from
  the global ``coef``/``intercept``, runs ``epochs`` passes of scikit-learn's
  ``SGDClassifier(loss="log_loss")`` on the local rows and writes ``weights.json``:
  the new weights and the local row count. No row leaves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def run(inputs: Any, params: dict[str, Any], output_dir: Path) -> None:
    import numpy as np

    (frame,) = (item.frame for item in inputs.values())
    features = list(params["features"])
    x = frame[features].to_numpy(dtype=float)
    y = frame[params["target"]].to_numpy()
    if params["mode"] == "stats":
        stats = {"n": len(x), "sum": x.sum(0).tolist(), "sumsq": (x * x).sum(0).tolist()}
        (output_dir / "stats.json").write_text(json.dumps(stats))
        return
    from sklearn.linear_model import SGDClassifier

    xs = (x - np.asarray(params["mean"])) / np.asarray(params["scale"])
    model = SGDClassifier(
        loss="log_loss",
        alpha=float(params.get("alpha", 1e-4)),
        learning_rate="constant",
        eta0=float(params.get("eta0", 0.01)),
        max_iter=int(params.get("epochs", 5)),
        tol=None,
        random_state=int(params.get("seed", 0)),
    )
    model.fit(
        xs,
        y,
        coef_init=np.asarray(params["coef"], dtype=float).reshape(1, -1),
        intercept_init=np.asarray([params["intercept"]], dtype=float),
    )
    weights = {
        "coef": model.coef_.ravel().tolist(),
        "intercept": float(model.intercept_[0]),
        "n": len(x),
    }
    (output_dir / "weights.json").write_text(json.dumps(weights))
