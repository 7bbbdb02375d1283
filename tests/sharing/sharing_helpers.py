"""Test helpers of the sharing tests (the network itself is `datagora.sharing.local`)."""

from datagora.sharing.local import PASSWORD, Network, Service, wait_until

__all__ = ["PASSWORD", "Network", "Service", "wait_until"]
