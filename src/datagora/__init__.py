"""datagora — a decentralized data marketplace for machine learning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datagora.errors import DatagoraError

if TYPE_CHECKING:
    from datagora.sdk import Market

__all__ = ["DatagoraError", "Market", "__version__", "connect"]
__version__ = "0.1.0"


def connect(*args: Any, **kwargs: Any) -> Market:
    """Connect to a datagora network; see :func:`datagora.sdk.connect`."""
    # Imported on use: `import datagora` stays light for tools that need only errors.
    from datagora.sdk import connect as _connect

    return _connect(*args, **kwargs)
