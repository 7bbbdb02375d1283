"""Federated training (FedAvg) of a logistic regression over several owners' compute nodes.

The coordinator runs on the consumer's side. Every round is one compute job per site,
recorded on chain like any job (with the result hashes). Two protocols:

**Without DP** (:data:`FEDAVG_ALGORITHM`). Round 0 asks every site for aggregate
statistics (row count, per-feature sums and sums of squares) to standardise all
sites the same way. Each following round submits one job per site, starting from the
current global weights, and averages the returned weights, weighted by each site's
row count. Only weights, counts and aggregates move; raw rows never leave their node.

**With DP** (:data:`FEDAVG_DP_ALGORITHM`, ``dp={"epsilon": e, "bounds": {...}}``).
One round, no statistics round: each site trains one epsilon-DP logistic regression
through its job's privacy session (features clipped to the declared bounds and
mapped onto [-1, 1], so standardisation comes from the declaration, not the data)
and returns only its weights and the epsilon it spent. The coordinator averages the
sites' models *with equal weights* (no site releases its row count). This is
one-shot model averaging, not iterative FedAvg: diffprivlib's objective perturbation
minimises each site's own noisy objective exactly, so a second round started from
the average would return the same kind of model again and charge epsilon again;
``rounds`` other than 1 is refused. Each site's epsilon (sequential composition over
its jobs) is in :attr:`FederatedModel.epsilon`.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import numpy as np

from datagora.compute.algorithms import source
from datagora.compute.client import ComputeClient
from datagora.compute.errors import BudgetExceeded, ComputeError, JobRefused

__all__ = [
    "FEDAVG_ALGORITHM",
    "FEDAVG_DP_ALGORITHM",
    "FederatedModel",
    "Site",
    "check_budgets",
    "dp_declaration",
    "federated_train",
]

FEDAVG_ALGORITHM: Final = source("fedavg-logistic")
"""The site-side algorithm's source: owners trust (or review) its SHA-256."""
FEDAVG_DP_ALGORITHM: Final = source("fedavg-logistic-dp")
"""The differentially private site-side algorithm (one DP model per site, no statistics)."""


@dataclass(frozen=True, slots=True)
class Site:
    """One dataset on its owner's compute node, and the consumer's compute order for it."""

    client: ComputeClient
    dataset: int
    order: str


@dataclass(slots=True)
class FederatedModel:
    """A logistic regression on standardised features: ``sigmoid(((x-mean)/scale)·coef + b)``.

    Trained under DP, ``x`` is first clipped to [``lower``, ``upper``] (the declared
    bounds; ``mean`` and ``scale`` are then their midpoints and half-widths) and
    ``epsilon`` maps each dataset to the epsilon its site spent on this model.
    """

    features: list[str]
    mean: np.ndarray[Any, Any]
    scale: np.ndarray[Any, Any]
    coef: np.ndarray[Any, Any]
    intercept: float
    jobs: list[int] = field(default_factory=list)
    lower: np.ndarray[Any, Any] | None = None
    upper: np.ndarray[Any, Any] | None = None
    epsilon: dict[int, float] = field(default_factory=dict)

    def decision(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if self.lower is not None and self.upper is not None:
            x = np.clip(x, self.lower, self.upper)
        result: np.ndarray[Any, Any] = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return result

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return (self.decision(x) > 0).astype(int)

    def score(self, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())

    def to_json(self) -> dict[str, Any]:
        """The model as JSON (format ``datagora.fedavg-logistic.v1``; trained under DP,
        ``datagora.fedavg-logistic-dp.v1``, which adds ``lower``, ``upper`` and
        ``epsilon``: dataset id as text → epsilon spent)."""
        doc: dict[str, Any] = {
            "format": "datagora.fedavg-logistic.v1",
            "features": self.features,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "jobs": self.jobs,
        }
        if self.lower is not None and self.upper is not None:
            doc["format"] = "datagora.fedavg-logistic-dp.v1"
            doc["lower"] = self.lower.tolist()
            doc["upper"] = self.upper.tolist()
            doc["epsilon"] = {str(d): e for d, e in sorted(self.epsilon.items())}
        return doc


HOLD_S: Final = 120
"""How long a DP round's sites keep their reservation waiting for the round's start."""


def _reserve_all(
    sites: Sequence[Site], params: dict[str, Any], algorithm: str
) -> list[tuple[Site, int]]:
    """Submit one held job per site (each node reserves its epsilon), then start them
    all; if a site refuses, cancel the jobs already held (their reservations are
    released, nothing ran) and raise its refusal. Two consumers racing for the last
    epsilon of two datasets then never each spend one site on a model never averaged."""
    held: list[tuple[Site, int]] = []
    try:
        for site in sites:
            job = site.client.submit(site.dataset, site.order, algorithm, params, hold=HOLD_S)
            held.append((site, job))
    except (ComputeError, httpx.HTTPError):
        for site, job in held:
            with contextlib.suppress(ComputeError, httpx.HTTPError):
                site.client.cancel(job)
        raise
    for site, job in held:
        site.client.start(job)
    return held


def _round(
    sites: Sequence[Site],
    params: dict[str, Any],
    name: str,
    timeout: float,
    jobs: list[int],
    algorithm: str,
    on_job: Callable[[int, dict[str, Any]], None] | None,
    *,
    hold: bool = False,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """One job per site; each job's final status and its result file `name` (JSON).
    With `hold`, every site reserves before any runs (:func:`_reserve_all`)."""
    submitted = (
        _reserve_all(sites, params, algorithm)
        if hold
        else [
            (site, site.client.submit(site.dataset, site.order, algorithm, params))
            for site in sites
        ]
    )
    out = []
    for site, job in submitted:
        jobs.append(job)
        info = site.client.wait(job, timeout)
        if on_job is not None:
            on_job(job, info)
        if info["state"] != "succeeded":
            raise ComputeError(
                f"federated job {job} on dataset {site.dataset} {info['state']}: {info['reason']}"
            )
        with tarfile.open(fileobj=io.BytesIO(site.client.result(job))) as tar:
            member = tar.extractfile(name)
            if member is None:
                raise ComputeError(f"job {job}'s result has no {name}")
            out.append((info, json.loads(member.read())))
    return out


def federated_train(
    sites: Sequence[Site],
    features: Sequence[str],
    target: str,
    *,
    rounds: int | None = None,
    epochs: int = 5,
    eta0: float = 0.01,
    alpha: float = 1e-4,
    timeout: float = 300.0,
    algorithm: str | None = None,
    on_job: Callable[[int, dict[str, Any]], None] | None = None,
    dp: Mapping[str, Any] | None = None,
    C: float = 1.0,
    max_iter: int = 100,
    classes: Sequence[Any] = (0, 1),
) -> FederatedModel:
    """Train over `sites` (see the module docstring); `on_job` is called with each
    finished job and its status.

    Without `dp`: FedAvg, `rounds` (default 3) training rounds after one statistics
    round; `algorithm` defaults to :data:`FEDAVG_ALGORITHM` (another file must follow
    its protocol: ``mode`` ``stats`` → ``stats.json``, ``train`` → ``weights.json``);
    `epochs`, `eta0`, `alpha` tune the local SGD.

    With ``dp={"epsilon": e, "bounds": {feature: [lower, upper]}}`` (bounds for every
    feature, never from the data): one round (`rounds` must be 1 or None) of
    :data:`FEDAVG_DP_ALGORITHM` (or a file writing the same ``weights.json``), each
    site spending `e`; `C` and `max_iter` tune the local DP model; `classes` are the
    target's two values, negative then positive (declared: never read from the data). Every site's
    remaining budget is checked before any job is submitted (:class:`BudgetExceeded`),
    then every site reserves its epsilon with a held job before any site runs: a site
    that refuses (another consumer took the budget meanwhile) releases the others.
    """
    if not sites:
        raise ComputeError("need at least one site")
    if dp is not None:
        if algorithm == FEDAVG_ALGORITHM:
            raise ComputeError(
                "fedavg-logistic trains on raw rows and releases exact statistics: under "
                "DP use fedavg-logistic-dp"
            )
        return _train_dp(
            sites,
            features,
            target,
            dp,
            rounds=1 if rounds is None else rounds,
            timeout=timeout,
            algorithm=algorithm or FEDAVG_DP_ALGORITHM,
            on_job=on_job,
            C=C,
            max_iter=max_iter,
            classes=classes,
        )
    if algorithm == FEDAVG_DP_ALGORITHM:
        raise ComputeError(
            'fedavg-logistic-dp needs a DP declaration: dp={"epsilon": e, "bounds": {...}}'
        )
    rounds = 3 if rounds is None else rounds
    if rounds < 1:
        raise ComputeError("need at least one round")
    algorithm = algorithm or FEDAVG_ALGORITHM
    base = {"features": list(features), "target": target}
    jobs: list[int] = []
    stats = [
        doc
        for _, doc in _round(
            sites, {**base, "mode": "stats"}, "stats.json", timeout, jobs, algorithm, on_job
        )
    ]
    n = sum(s["n"] for s in stats)
    mean = np.sum([s["sum"] for s in stats], axis=0) / n
    var = np.sum([s["sumsq"] for s in stats], axis=0) / n - mean**2
    scale = np.sqrt(np.maximum(var, 1e-12))
    coef = np.zeros(len(features))
    intercept = 0.0
    for r in range(rounds):
        params = {
            **base,
            "mode": "train",
            "mean": mean.tolist(),
            "scale": scale.tolist(),
            "coef": coef.tolist(),
            "intercept": intercept,
            "epochs": epochs,
            "eta0": eta0,
            "alpha": alpha,
            "seed": r,
        }
        weights = [
            doc
            for _, doc in _round(sites, params, "weights.json", timeout, jobs, algorithm, on_job)
        ]
        total = sum(w["n"] for w in weights)
        coef = np.sum([np.asarray(w["coef"]) * w["n"] for w in weights], axis=0) / total
        intercept = float(sum(w["intercept"] * w["n"] for w in weights) / total)
    return FederatedModel(list(features), mean, scale, coef, intercept, jobs)


def dp_declaration(
    dp: Mapping[str, Any], features: Sequence[str]
) -> tuple[float, dict[str, tuple[float, float]]]:
    """The per-site epsilon and the bounds of a DP training, checked as a node would
    (:class:`ComputeError` if not valid, or if a feature has no bounds)."""
    from datagora.compute.dp import check_dp_params

    try:
        epsilon, bounds = check_dp_params({"dp": dp})
    except JobRefused as exc:
        raise ComputeError(str(exc)) from None
    missing = [f for f in features if f not in bounds]
    if missing:
        raise ComputeError(
            f"no declared bounds for features {missing}: give [lower, upper] for every "
            "feature (bounds are never inferred from the data)"
        )
    return epsilon, bounds


def check_budgets(sites: Sequence[tuple[ComputeClient, int]], epsilon: float) -> None:
    """:class:`BudgetExceeded` unless every (node, dataset) that requires DP has at least
    `epsilon` left (of the dataset's budget, and of the consumer's cap if any). Asked
    before any job is submitted (or anything ordered): a site accepting while another
    refuses would spend epsilon on a model never averaged. Not atomic by itself — the
    round then reserves at every site with held jobs before any runs."""
    for client, dataset in sites:
        budget = client.budget(dataset)
        if budget["differential_privacy"] and budget["remaining"] < epsilon - 1e-12:
            cap = float(budget.get("consumer_budget") or 0.0)
            whose = (
                f"{client.consumer.address} has {budget['remaining']:g} left (of a "
                f"per-consumer cap of {cap:g}) on dataset {dataset}"
                if cap
                else f"dataset {dataset} has {budget['remaining']:g} left of "
                f"{budget['budget']:g} (one budget for every consumer)"
            )
            raise BudgetExceeded(
                f"the training declares epsilon {epsilon:g} per site but {whose}: "
                "no job was submitted"
            )


def _train_dp(
    sites: Sequence[Site],
    features: Sequence[str],
    target: str,
    dp: Mapping[str, Any],
    *,
    rounds: int,
    timeout: float,
    algorithm: str,
    on_job: Callable[[int, dict[str, Any]], None] | None,
    C: float,
    max_iter: int,
    classes: Sequence[Any],
) -> FederatedModel:
    if rounds != 1:
        raise ComputeError(
            f"differentially private federated training runs one round, not {rounds}: each "
            "site's DP model minimises its own noisy objective exactly (diffprivlib cannot "
            "start from the global model), so more rounds would only charge epsilon again"
        )
    epsilon, bounds = dp_declaration(dp, features)
    check_budgets([(site.client, site.dataset) for site in sites], epsilon)
    lower = np.array([bounds[f][0] for f in features])
    upper = np.array([bounds[f][1] for f in features])
    params = {
        "features": list(features),
        "target": target,
        "dp": {"epsilon": epsilon, "bounds": {f: list(bounds[f]) for f in features}},
        "C": C,
        "max_iter": max_iter,
        "classes": list(classes),
    }
    jobs: list[int] = []
    results = _round(sites, params, "weights.json", timeout, jobs, algorithm, on_job, hold=True)
    returned = {json.dumps(doc.get("classes")) for _, doc in results}
    if len(returned) > 1:
        raise ComputeError(f"the sites' models have different classes: {sorted(returned)}")
    spent: dict[int, float] = {}
    for site, (info, doc) in zip(sites, results, strict=True):
        # What the node charged (the declared epsilon) where the owner requires DP; what
        # the site's session reports spending elsewhere.
        charged = float(info.get("epsilon") or 0.0) or float(doc["epsilon"])
        spent[site.dataset] = spent.get(site.dataset, 0.0) + charged
    coef = np.mean([np.asarray(doc["coef"], dtype=float) for _, doc in results], axis=0)
    intercept = float(np.mean([float(doc["intercept"]) for _, doc in results]))
    return FederatedModel(
        list(features),
        (lower + upper) / 2,
        (upper - lower) / 2,
        coef,
        intercept,
        jobs,
        lower=lower,
        upper=upper,
        epsilon=spent,
    )
