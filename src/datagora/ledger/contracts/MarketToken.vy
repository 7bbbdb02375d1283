# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title MarketToken
@notice The marketplace currency of datagora: an ERC-20 with EIP-2612 permit,
        straight from snekmate. The deployer is the first minter (a faucet on
        development chains); `set_minter` hands the role on.
"""

from snekmate.auth import ownable
from snekmate.tokens import erc20

initializes: ownable
initializes: erc20[ownable := ownable]

exports: erc20.__interface__


@deploy
def __init__(name_: String[25], symbol_: String[5]):
    ownable.__init__()
    erc20.__init__(name_, symbol_, 18, name_, "1")
