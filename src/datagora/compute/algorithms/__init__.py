"""Algorithms shipped with datagora (their files are what consumers submit).

The node knows them by the SHA-256 of their files. Two of them are the node's trusted
*differentially private* algorithms: on a dataset whose owner requires DP, an algorithm
trusted by hash runs without review only if it is one of these (:func:`is_dp_algorithm`);
any other code waits for the owner's review, which says that it is not DP.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any, Final

from datagora.compute.errors import JobRefused

__all__ = [
    "BUILTIN_FILES",
    "DP_ALGORITHMS",
    "check_dp_algorithm",
    "dp_algorithm_hashes",
    "dp_review_note",
    "is_dp_algorithm",
    "source",
]

_HERE: Final = Path(__file__).parent

BUILTIN_FILES: Final = {
    "fedavg-logistic": "fedavg_logistic.py",
    "fedavg-logistic-dp": "fedavg_logistic_dp.py",
    "dp-query": "dp_query.py",
}
"""Built-in algorithm names and their files in this folder."""

DP_ALGORITHMS: Final = ("fedavg-logistic-dp", "dp-query")
"""The built-ins whose whole release is differentially private with the job's declared
epsilon and bounds (labels from the declaration, errors without data values)."""


@cache
def source(name: str) -> str:
    """The code of the built-in algorithm `name`."""
    return (_HERE / BUILTIN_FILES[name]).read_text("utf-8")


@cache
def dp_algorithm_hashes() -> dict[bytes, str]:
    """SHA-256 of each trusted DP algorithm's file → its name."""
    return {hashlib.sha256(source(n).encode()).digest(): n for n in DP_ALGORITHMS}


def is_dp_algorithm(algorithm_hash: bytes) -> bool:
    """Whether the code with this SHA-256 is one of the node's trusted DP algorithms."""
    return algorithm_hash in dp_algorithm_hashes()


def check_dp_algorithm(algorithm_hash: bytes, trusted: bool) -> bool:
    """On a dataset that requires DP: whether the code is one of the node's DP algorithms.

    Raises :class:`JobRefused` when the owner trusts the hash (so it would run at once,
    unreviewed) but it is not one of them: trusting code by hash says nothing about its
    privacy. Untrusted code that is not DP is admitted for the owner's review."""
    enforced = is_dp_algorithm(algorithm_hash)
    if trusted and not enforced:
        raise JobRefused(
            "this dataset requires differential privacy and its owner trusts this algorithm, "
            f"but it is not one of the node's DP algorithms ({', '.join(DP_ALGORITHMS)}): "
            "it would run on raw rows unreviewed. Use a DP algorithm; the owner should "
            "stop trusting this one",
            403,
        )
    return enforced


def dp_review_note(algorithm_hash: bytes) -> dict[str, Any]:
    """What the owner's review of a job on a DP dataset says about its code's privacy."""
    name = dp_algorithm_hashes().get(algorithm_hash)
    if name is not None:
        return {
            "required": True,
            "enforced": True,
            "note": f"the node's DP algorithm {name}: its release is differentially "
            "private with the declared epsilon and bounds",
        }
    return {
        "required": True,
        "enforced": False,
        "note": "NOT differentially private: this code is not one of the node's DP "
        "algorithms. It reads raw rows and may release them or exact statistics; the "
        "epsilon it declares is only what will be charged. Approve only code you have "
        "read and would release without DP",
    }
