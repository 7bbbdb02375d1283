"""Compute-to-data: sandboxed jobs, output policy, DP budgets, mock data, federated training.

Import what you need from the submodules, or these names from here (loaded on first
use, so that the sandbox's runner, which imports :mod:`datagora.compute.dp`, stays
light):

- node side: :func:`create_compute_app`, :class:`JobService`, :class:`ComputeDataset`,
  :class:`Sandbox`, :class:`Limits`, :class:`OutputPolicy`;
- consumer side: :class:`ComputeClient`, :func:`open_result`, :func:`extract_archive`,
  :func:`federated_train`, :class:`Site`, :data:`FEDAVG_ALGORITHM`;
- :func:`make_mock`; errors under :class:`ComputeError`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "FEDAVG_ALGORITHM",
    "BudgetExceeded",
    "ComputeClient",
    "ComputeDataset",
    "ComputeError",
    "JobRefused",
    "JobService",
    "Limits",
    "OutputPolicy",
    "Sandbox",
    "SandboxUnavailable",
    "Site",
    "create_compute_app",
    "extract_archive",
    "federated_train",
    "make_mock",
    "open_result",
]

_WHERE = {
    "FEDAVG_ALGORITHM": "federated",
    "BudgetExceeded": "errors",
    "ComputeClient": "client",
    "ComputeDataset": "jobs",
    "ComputeError": "errors",
    "JobRefused": "errors",
    "JobService": "jobs",
    "Limits": "sandbox",
    "OutputPolicy": "policy",
    "Sandbox": "sandbox",
    "SandboxUnavailable": "errors",
    "Site": "federated",
    "create_compute_app": "node",
    "extract_archive": "client",
    "federated_train": "federated",
    "make_mock": "mock",
    "open_result": "results",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"datagora.compute.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'datagora.compute' has no attribute {name!r}")
