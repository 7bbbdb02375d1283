"""Every flow the issues name is a subcommand, and each one's --help shows an example."""

from __future__ import annotations

import itertools
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


# -- help at 80 columns ---------------------------------------------------------------------

BOX = str.maketrans({c: " " for c in "│╭╮╰╯─"})


def _help80(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def _flat(text: str) -> str:
    return " ".join(text.translate(BOX).split())


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=[" ".join(p) for p, _ in LEAVES])
def test_help_reads_well_at_80_columns(path: list[str]) -> None:
    command = dict((" ".join(p), c) for p, c in LEAVES)[" ".join(path)]
    text = _help80(path)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    # Flags take no value; arguments are NAMES, not {names}.
    assert "<bool>" not in text, text
    usage = next(line for line in lines if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage
    for param in command.params:
        if param.param_type_name == "argument":
            assert str(param.name).upper() in usage, usage
    # Each example is whole on its line (a user copies it).
    doc = command.help or ""
    examples = [line.strip() for line in doc.splitlines() if line.strip().startswith("Example:")]
    assert examples
    for example in examples:
        assert any(line.strip() == example for line in lines), (example, text)
    # The description is all there (rich markup swallowed no "[...]") and each of its lines
    # is filled: no line ends where the next word would have fit (a hard wrap).
    description = doc.split("Example:")[0]
    assert " ".join(description.split()) in _flat(text), text
    start = next(i for i, line in enumerate(lines) if "Usage:" in line) + 2
    block = []
    for line in lines[start:]:
        if not line.strip() or line.strip().startswith("Example:"):
            break
        block.append(line.rstrip())
    for line, following in itertools.pairwise(block):
        assert len(line) + 1 + len(following.split()[0]) > 79, (line, following)
    # Every option's help is there in full.
    for param in command.params:
        help_text = getattr(param, "help", None)
        if help_text:
            assert " ".join(help_text.replace("\\[", "[").split()) in _flat(text), (
                help_text,
                text,
            )


# -- --json everywhere ----------------------------------------------------------------------

# Leaf commands without --json, and why: each prints nothing to parse, or only JSON.
NO_JSON = {
    "account export-public": "prints its JSON record always",
}


@pytest.mark.parametrize("path", [p for p, _ in LEAVES], ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_that_prints_a_result_has_json(path: list[str]) -> None:
    command = dict((" ".join(p), c) for p, c in LEAVES)[" ".join(path)]
    flags = {o for param in command.params for o in getattr(param, "opts", [])}
    name = " ".join(path)
    if name in NO_JSON:
        assert "--json" not in flags, f"{name} has --json now: take it off NO_JSON"
    else:
        assert "--json" in flags, f"{name} prints a result but has no --json"


def test_the_json_shapes_are_documented() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    for path, _ in LEAVES:
        name = " ".join(path)
        if name not in NO_JSON:
            assert f"`datagora {name}" in doc, f"docs/cli.md does not show {name} --json"
