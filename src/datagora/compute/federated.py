"""Federated training (FedAvg) of a logistic regression over several owners' compute nodes.

The coordinator runs on the consumer's side. Round 0 asks every site for aggregate
statistics (row count, per-feature sums and sums of squares) to standardise all
sites the same way. Each following round submits one compute job per site — the
algorithm :data:`FEDAVG_ALGORITHM`, starting from the current global weights — and
averages the returned weights, weighted by each site's row count. Only weights,
counts and aggregates move; raw rows never leave their node. Every round's jobs are
recorded on chain like any job (with the result hashes).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from datagora.compute.client import ComputeClient
from datagora.compute.errors import ComputeError

__all__ = ["FEDAVG_ALGORITHM", "FederatedModel", "Site", "federated_train"]

FEDAVG_ALGORITHM: Final = (Path(__file__).parent / "algorithms" / "fedavg_logistic.py").read_text()
"""The site-side algorithm's source: owners trust (or review) its SHA-256."""


@dataclass(frozen=True, slots=True)
class Site:
    """One dataset on its owner's compute node, and the consumer's compute order for it."""

    client: ComputeClient
    dataset: int
    order: str


@dataclass(slots=True)
class FederatedModel:
    """A logistic regression on standardised features: ``sigmoid(((x-mean)/scale)·coef + b)``."""

    features: list[str]
    mean: np.ndarray[Any, Any]
    scale: np.ndarray[Any, Any]
    coef: np.ndarray[Any, Any]
    intercept: float
    jobs: list[int] = field(default_factory=list)

    def decision(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        result: np.ndarray[Any, Any] = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return result

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return (self.decision(x) > 0).astype(int)

    def score(self, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float:
        return float((self.predict(x) == np.asarray(y)).mean())

    def to_json(self) -> dict[str, Any]:
        """The model as JSON (format ``datagora.fedavg-logistic.v1``)."""
        return {
            "format": "datagora.fedavg-logistic.v1",
            "features": self.features,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "jobs": self.jobs,
        }


def _round(
    sites: Sequence[Site],
    params: dict[str, Any],
    name: str,
    timeout: float,
    jobs: list[int],
    algorithm: str,
    on_job: Callable[[int, dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    submitted = [
        (site, site.client.submit(site.dataset, site.order, algorithm, params)) for site in sites
    ]
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
            out.append(json.loads(member.read()))
    return out


def federated_train(
    sites: Sequence[Site],
    features: Sequence[str],
    target: str,
    *,
    rounds: int = 3,
    epochs: int = 5,
    eta0: float = 0.01,
    alpha: float = 1e-4,
    timeout: float = 300.0,
    algorithm: str = FEDAVG_ALGORITHM,
    on_job: Callable[[int, dict[str, Any]], None] | None = None,
) -> FederatedModel:
    """Train by FedAvg over `sites`; `rounds` training rounds after one statistics round.

    `algorithm` is the site-side code (default :data:`FEDAVG_ALGORITHM`; another file
    must follow the same protocol: ``mode`` ``stats`` → ``stats.json``, ``train`` →
    ``weights.json``); `on_job` is called with each finished job and its status.
    """
    if not sites or rounds < 1:
        raise ComputeError("need at least one site and one round")
    base = {"features": list(features), "target": target}
    jobs: list[int] = []
    stats = _round(sites, {**base, "mode": "stats"}, "stats.json", timeout, jobs, algorithm, on_job)
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
        weights = _round(sites, params, "weights.json", timeout, jobs, algorithm, on_job)
        total = sum(w["n"] for w in weights)
        coef = np.sum([np.asarray(w["coef"]) * w["n"] for w in weights], axis=0) / total
        intercept = float(sum(w["intercept"] * w["n"] for w in weights) / total)
    return FederatedModel(list(features), mean, scale, coef, intercept, jobs)
