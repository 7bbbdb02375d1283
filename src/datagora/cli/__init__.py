"""The `datagora` command line."""

from datagora.cli import flows as _flows  # registers the flow commands on `app`
from datagora.cli.app import app, main

__all__ = ["app", "main"]
del _flows
