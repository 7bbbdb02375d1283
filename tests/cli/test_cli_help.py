"""Every flow the issues name is a subcommand, and each one's --help shows an example."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

import datagora.cli  # registers every command on the app
from datagora.cli.app import app

NAMED = [
    "account",
    "publish",
    "update",
    "search",
    "show",
    "buy",
    "order",
    "request",
    "grant",
    "deny",
    "revoke",
    "rotate",
    "download",
    "kv",
    "mock",
    "compute",
    "jobs",
    "train",
    "audit",
    "repair",
    "node",
    "up",
    "status",
    "bench",
    "demo",
]


def _leaves(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    children = getattr(command, "commands", None)
    if children is None:
        yield path, command
        return
    for name, child in children.items():
        yield from _leaves(child, [*path, name])


LEAVES = list(_leaves(typer.main.get_command(app), []))


def test_every_named_flow_is_a_command() -> None:
    assert datagora.cli.app is app
    top = {path[0] for path, _ in LEAVES}
    assert not set(NAMED) - top, sorted(set(NAMED) - top)


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=[" ".join(p) for p, _ in LEAVES])
def test_help_shows_an_example(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "Example" in result.output and "datagora " + path[0] in result.output
