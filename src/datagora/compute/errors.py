"""The compute layer's errors: one subtree of :class:`datagora.errors.DatagoraError`."""

from __future__ import annotations

from datagora.errors import DatagoraError

__all__ = [
    "BudgetExceeded",
    "ComputeError",
    "EpsilonExceeded",
    "JobNotFound",
    "JobRefused",
    "MockError",
    "SandboxUnavailable",
]


class ComputeError(DatagoraError):
    """Base of every compute-to-data error."""


class SandboxUnavailable(ComputeError):
    """Jobs cannot run in bubblewrap here, and the operator did not allow the weak mode."""


class JobRefused(ComputeError):
    """A job was refused before it ran; the message says why and what to do."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class BudgetExceeded(JobRefused):
    """The job would spend more differential-privacy epsilon than the consumer has left."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 409)


class EpsilonExceeded(ComputeError):
    """The algorithm asked for more epsilon than its job declared (raised inside the job)."""


class JobNotFound(ComputeError):
    """No such job on this node."""


class MockError(ComputeError):
    """Mock data cannot be made from this table."""
