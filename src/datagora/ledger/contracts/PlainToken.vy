# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title PlainToken
@notice A plain ERC-20 (snekmate) WITHOUT EIP-2612 permit, that its deployer can
        mint: what an existing currency looks like to datagora when it has no
        permit (a stablecoin of the older kind). Used by tests and development
        networks (`datagora chain deploy --currency ADDRESS`); never deployed by
        `deploy_contracts` itself.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc20

initializes: ownable
initializes: erc20[ownable := ownable]

exports: (
    erc20.transfer,
    erc20.approve,
    erc20.transferFrom,
    erc20.balanceOf,
    erc20.allowance,
    erc20.totalSupply,
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    erc20.mint,
    erc20.is_minter,
)


@deploy
def __init__(name_: String[25], symbol_: String[5], decimals_: uint8):
    ownable.__init__()
    erc20.__init__(name_, symbol_, decimals_, name_, "1")
