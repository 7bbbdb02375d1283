"""Every service process knows every signed-request type, whichever layer defines it."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
from datagora.crypto.eip712 import REQUEST_TYPES
import datagora.sharing.requests
print(sorted(REQUEST_TYPES))
from datagora.node.apps import load_request_types
load_request_types()
print(sorted(REQUEST_TYPES))
"""


def test_the_node_layer_loads_both_layers_request_types() -> None:
    """A proxy (sharing) alone knows only sharing's types; a node built by node.apps knows all,
    so a compute request sent to a proxy or agent is refused as unexpected, not malformed."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == str(["DelegationRequest", "FragmentRequest"])
    assert out[1] == str(
        [
            "ComputeRequest",
            "DelegationRequest",
            "FragmentRequest",
            "JobRequest",
            "OwnerJobRequest",
            "StorageWrite",
        ]
    )
