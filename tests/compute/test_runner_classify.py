"""How the sandbox runner names a job's failure: by the exception's class, never its name."""

from __future__ import annotations

from datagora.compute import _runner
from datagora.compute.errors import EpsilonExceeded


def test_a_real_budget_error_is_reported_as_epsilon() -> None:
    try:
        raise RuntimeError("wrapped") from EpsilonExceeded("asked for 2, declared 1")
    except RuntimeError as exc:
        assert _runner.classify(exc, "/tmp/job") == _runner.EXIT_EPSILON


def test_a_lookalike_class_is_not_a_budget_error() -> None:
    """An algorithm's own class called EpsilonExceeded does not fake the reason."""
    lookalike = type("EpsilonExceeded", (Exception,), {})
    assert _runner.classify(lookalike("fake"), "/tmp/job") == _runner.EXIT_RAISED


def test_diffprivlib_budget_error_is_reported_as_epsilon() -> None:
    from diffprivlib.utils import BudgetError

    assert _runner.classify(BudgetError("spent"), "/tmp/job") == _runner.EXIT_EPSILON
