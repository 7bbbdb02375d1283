"""The Hardhat launcher: the node runs the generated config, not Hardhat's defaults."""

from __future__ import annotations

import pytest
from web3 import Web3

from datagora.ledger import dev_account, jsonrpc
from datagora.ledger.chain import DEV_ACCOUNTS, DEV_BALANCE_WEI
from datagora.ledger.hardhat import HARDHAT_CHAIN_ID, Hardhat

pytestmark = pytest.mark.hardhat


def test_the_node_runs_anvils_chain_id_accounts_and_automine(hardhat: Hardhat) -> None:
    assert int(jsonrpc.call(hardhat.url, "eth_chainId", []), 16) == HARDHAT_CHAIN_ID
    # The development mnemonic's first ten accounts, as anvil funds them (Hardhat's own
    # default is twenty: ten means the generated config is the one running).
    accounts = [Web3.to_checksum_address(a) for a in jsonrpc.call(hardhat.url, "eth_accounts", [])]
    assert accounts == [dev_account(i).address for i in range(DEV_ACCOUNTS)]
    assert int(jsonrpc.call(hardhat.url, "eth_getBalance", [accounts[9], "0x0"]), 16) == (
        DEV_BALANCE_WEI
    )
    assert jsonrpc.call(hardhat.url, "hardhat_getAutomine", []) is True
    assert hardhat.running
