"""The `datagora` command line."""

from datagora.cli.app import app, main

__all__ = ["app", "main"]
