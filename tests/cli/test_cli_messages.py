"""A new user's mistakes, made through the `datagora` command: each one is refused in one
line that says what happened and names the next step (the command to run)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

import datagora as dg
from datagora.cli.app import app
from datagora.crypto.keys import import_account
from datagora.errors import ConfigError, NotFoundError, Unreachable
from datagora.ledger import dev_account
from datagora.ledger.errors import ChainError
from datagora.market.errors import NoSuchDataset
from datagora.node.network import Network as NetworkFile
from datagora.ports import free_port
from datagora.testing.sharing import PASSWORD, Network
from datagora.testing.storage import LocalNodes


@dataclass
class Net:
    env: dict[str, str]
    file: Path
    keys: Path
    paid: int
    free: int
    approval: int


def cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "datagora", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a refused command (exit 1, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    base = tmp_path_factory.mktemp("messages")
    sharing = Network(base / "sharing", proxies=1, threshold=1).start()
    try:
        import_account(
            sharing.keys, dev_account(2).key.hex(), PASSWORD, "researcher", scrypt_n=2**4
        )
        with LocalNodes(6, base / "storage") as storage:
            file = base / "network.json"
            NetworkFile(
                sharing.anvil.url,
                sharing.ledger.deployment,
                storage=storage.urls,
                proxies=sharing.proxy_urls,
                threshold=1,
                agent=sharing.agent.url,
            ).save(file)
            env = {
                **os.environ,
                "DATAGORA_NETWORK": str(file),
                "DATAGORA_KEYS_DIR": str(sharing.keys),
                "DATAGORA_PASSWORD": PASSWORD,
            }
            env.pop("DATAGORA_ACCOUNT", None)
            data = base / "cohort.csv"
            data.write_text("radius,label\n1.5,0\n2.5,1\n")
            ids = []
            for how in (["--price", "1"], ["--free"], ["--approval"]):
                published = cli(
                    env, "publish", str(data), "--title", "Cohort", *how,
                    "--account", sharing.owner.address, "--json",
                )  # fmt: skip
                assert published.returncode == 0, published.stderr
                ids.append(int(json.loads(published.stdout)["dataset"]))
            yield Net(env, file, sharing.keys, *ids)
    finally:
        sharing.stop()


@pytest.mark.parametrize(
    "command",
    [
        ["buy", "99", "--account", "researcher"],
        ["order", "99", "--account", "researcher"],
        ["request", "99", "--purpose", "a classifier", "--account", "researcher"],
        ["download", "99", "--account", "researcher"],
        ["mock", "99"],
        ["repair", "99", "--check"],
    ],
    ids=lambda c: c[0],
)
def test_no_such_dataset_says_so_and_to_search(net: Net, command: list[str]) -> None:
    line = refused(cli(net.env, *command))
    assert "no dataset 99" in line and "datagora search" in line, line
    assert "zero address" not in line


def test_sdk_no_such_dataset_is_a_not_found_error(net: Net) -> None:
    market = dg.connect(net.file, "researcher", net.keys, PASSWORD)
    with pytest.raises(NoSuchDataset, match="no dataset 99") as caught:
        market.dataset(99)
    assert isinstance(caught.value, NotFoundError)
    with pytest.raises(NoSuchDataset, match="datagora search"):
        market.buy_and_order(99)
    with pytest.raises(NoSuchDataset):
        market.order_free(99)


def test_download_before_access_names_the_way_in(net: Net, tmp_path: Path) -> None:
    for dataset, step in (
        (net.paid, f"datagora buy {net.paid}"),
        (net.free, f"datagora order {net.free}"),
        (net.approval, f"datagora request {net.approval}"),
    ):
        target = tmp_path / f"{dataset}.csv"
        result = cli(
            net.env, "download", str(dataset), "-o", str(target), "--account", "researcher"
        )
        line = refused(result)
        assert step in line, line
        assert not target.exists()


def _dead(net: Net, tmp_path: Path, state_dir: Path | None) -> dict[str, str]:
    """The same network file with nothing listening at its chain or catalog."""
    loaded = NetworkFile.load(net.file)
    dead = f"http://127.0.0.1:{free_port()}"
    stopped = dataclasses.replace(
        loaded, chain_url=dead, catalog=dead, state_dir=str(state_dir) if state_dir else None
    )
    path = tmp_path / "stopped.json"
    stopped.save(path)
    return {**net.env, "DATAGORA_NETWORK": str(path)}


def test_a_stopped_up_network_says_to_start_it(net: Net, tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = _dead(net, tmp_path, state)
    for command in (["buy", str(net.paid), "--account", "researcher"], ["search"], ["status"]):
        line = refused(cli(env, *command))
        assert f"`datagora up --dir {state}`" in line, line
        assert "HTTPConnectionPool" not in line
    # From the directory `up` ran in, plain `datagora up` is the command.
    (tmp_path / ".datagora").mkdir()
    env = _dead(net, tmp_path, tmp_path / ".datagora")
    line = refused(cli(env, "show", "1", cwd=tmp_path))
    assert "start it with `datagora up`" in line, line


def test_an_unreachable_network_not_made_by_up_says_to_check_it(net: Net, tmp_path: Path) -> None:
    env = _dead(net, tmp_path, None)
    line = refused(cli(env, "buy", str(net.paid), "--account", "researcher"))
    assert "cannot reach the chain" in line and "network file" in line, line
    assert "datagora up" not in line


def test_network_failures_are_not_configuration_errors(net: Net, tmp_path: Path) -> None:
    loaded = NetworkFile.load(net.file)
    dead = f"http://127.0.0.1:{free_port()}"
    stopped = dataclasses.replace(loaded, chain_url=dead)
    path = tmp_path / "stopped.json"
    stopped.save(path)
    with pytest.raises(Unreachable) as caught:
        dg.connect(path, "researcher", net.keys, PASSWORD).buy_and_order(net.paid)
    assert isinstance(caught.value, ChainError) and caught.value.url == dead
    assert not isinstance(caught.value, ConfigError)


def test_account_help_names_its_commands() -> None:
    top = CliRunner().invoke(app, ["--help"], terminal_width=120).output
    # The command's row: its name then the column gap (a wrapped description line of
    # another command may begin with the word "account" too).
    (row,) = [line for line in top.splitlines() if line.strip("│ ").startswith("account   ")]
    assert "create" not in row.lower() and "new" in row, row
    group = CliRunner().invoke(app, ["account", "--help"], terminal_width=120).output
    for name in ("new", "import", "list", "export-public"):
        assert name in group
