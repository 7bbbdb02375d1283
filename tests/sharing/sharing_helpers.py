"""Test helpers of the sharing tests (the network itself is `datagora.testing.sharing`)."""

from datagora.testing.sharing import PASSWORD, Network, Service, wait_until

__all__ = ["PASSWORD", "Network", "Service", "wait_until"]
