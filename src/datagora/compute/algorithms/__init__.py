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
from typing import Final

__all__ = ["BUILTIN_FILES", "DP_ALGORITHMS", "dp_algorithm_hashes", "is_dp_algorithm", "source"]

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
