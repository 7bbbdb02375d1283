"""Errors of the node layer (launching, serving, reaching a network): all DatagoraError."""

from __future__ import annotations

from datagora.errors import ConfigError, DatagoraError, Unreachable

__all__ = [
    "LaunchError",
    "NetworkDown",
    "NodeExited",
    "NotADevelopmentChain",
    "ServerError",
]


class LaunchError(DatagoraError):
    """The local network could not be started."""


class NodeExited(LaunchError):
    """A part of the network exited unexpectedly; everything else was stopped."""


class ServerError(DatagoraError):
    """An in-process server did not start (its app failed at startup, or timed out)."""


class NetworkDown(Unreachable):
    """Some part of the network is not answering (see each part's detail)."""


class NotADevelopmentChain(ConfigError):
    """Minting from the faucet (`datagora fund`) works on development chains only."""
