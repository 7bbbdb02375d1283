"""The `datagora` command: one Typer app, one line per user error, tracebacks with --debug."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import httpx
import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from datagora.cli.benchmarks import bench_app
from datagora.cli.common import err, io_failure, what_to_do
from datagora.cli.compute import commands as compute_commands
from datagora.cli.compute import compute_app, jobs_app
from datagora.cli.deals import earnings, storage_app
from datagora.cli.flows import account_app, conditions_app, kv_app
from datagora.cli.flows import commands as flow_commands
from datagora.cli.network import chain_app, demo_commands, node_app
from datagora.cli.network import commands as network_commands
from datagora.cli.proxies import proxies_app
from datagora.cli.search import commands as search_commands
from datagora.errors import DatagoraError


class _Argument(TyperArgument):
    """An argument shown as its name in capitals: `datagora show DATASET`, not `{dataset}`."""

    def _usage_display_name(self) -> str:
        name = str(self.metavar or self.name or "").upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


class _Option(TyperOption):
    """A flag shows no value type (`--json`, not `--json <bool>`): it takes no value."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None if self.is_flag else super().display_type_rich(ctx)


def _tidy(param: Any) -> None:
    if type(param) is TyperArgument:
        param.__class__ = _Argument
        param.metavar = param.metavar or str(param.name or "").upper()
    elif type(param) is TyperOption:
        param.__class__ = _Option


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # with --help, made per context
        for param in params:
            _tidy(param)
        return params


class _Group(TyperGroup):
    """The root command: help reads well at 80 columns (see `_Argument`, `_Option`).

    Typer builds every subcommand before the root group, so the root tidies the tree
    once: each command's class gains the two display rules above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pending: list[Any] = list(self.commands.values())
        while pending:
            command = pending.pop()
            if type(command) is TyperCommand:
                command.__class__ = _Command
            pending.extend(getattr(command, "commands", {}).values())
            for param in command.params:
                _tidy(param)


app = typer.Typer(
    cls=_Group,
    name="datagora",
    help="datagora — a decentralized data marketplace for machine learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when something fails.")
    ] = False,
) -> None:
    """datagora — a decentralized data marketplace for machine learning."""
    # `main` consumes --debug before Typer parses; declaring it here documents it.


# The commands, one module per area; each imports cli.common, none another.
app.add_typer(demo_commands)  # demo
app.add_typer(search_commands)  # search, show
app.add_typer(network_commands)  # node, up, status
app.add_typer(compute_commands)  # train
app.add_typer(flow_commands)  # publish, buy, … mock
app.add_typer(chain_app, name="chain")
app.add_typer(bench_app, name="bench")
app.add_typer(compute_app, name="compute")
app.add_typer(jobs_app, name="jobs")
app.add_typer(account_app, name="account")
app.add_typer(kv_app, name="kv")
app.add_typer(conditions_app, name="conditions")
app.add_typer(storage_app, name="storage")
# The issue names `node earnings`; it is `storage earnings` (one implementation).
node_app.command("earnings")(earnings)
app.add_typer(proxies_app, name="proxies")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors print one line and exit 1; --debug shows tracebacks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        app(args=args, prog_name="datagora", standalone_mode=False)
    except DatagoraError as exc:
        if debug:
            raise
        err.print(f"[red]error:[/red] {what_to_do(exc)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except (OSError, httpx.TransportError) as exc:
        # A backstop: a layer should have raised an Unreachable for this; never a traceback.
        if debug:
            raise
        err.print(f"[red]error:[/red] {io_failure(exc)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except typer.TyperException as exc:
        # Usage errors (and "no arguments: here is the help") from the parser.
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            err.print(f"error: {exc}")
        sys.exit(int(getattr(exc, "exit_code", 2)))
    except KeyboardInterrupt:
        sys.exit(130)
