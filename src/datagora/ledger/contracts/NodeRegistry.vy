# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title NodeRegistry
@notice Who serves datagora: each storage, proxy and compute node registers
        here with its roles, its HTTP endpoint, its Umbral public key and a
        stake in the market currency. Clients discover nodes from this list
        instead of a static one.

        A node stakes at least the sum of the minimum stakes of its roles (set
        by the admin). It may update its endpoint and key, add stake, and leave:
        leaving starts an unbonding delay during which it is no longer used but
        can still be slashed; after the delay it withdraws what is left.
        Approved slashers (the storage-deals contract, a proxy-fault reporter)
        take part of a stake and send it to whom they name.
"""

from snekmate.auth import ownable

initializes: ownable

exports: (ownable.owner, ownable.transfer_ownership)


interface IERC20:
    def transferFrom(owner: address, to: address, amount: uint256) -> bool: nonpayable
    def transfer(to: address, amount: uint256) -> bool: nonpayable


ROLE_STORAGE: constant(uint256) = 1
ROLE_PROXY: constant(uint256) = 2
ROLE_COMPUTE: constant(uint256) = 4
ALL_ROLES: constant(uint256) = 7

STATE_NONE: constant(uint8) = 0  # never registered
STATE_ACTIVE: constant(uint8) = 1
STATE_LEAVING: constant(uint8) = 2  # unbonding until unbond_at
STATE_GONE: constant(uint8) = 3  # withdrew; may register again

MAX_ENDPOINT: constant(uint256) = 256
MAX_UNBONDING: constant(uint256) = 365 * 86400

TOKEN: public(immutable(address))


struct Node:
    roles: uint256
    endpoint: String[256]
    umbral_pk: Bytes[33]
    stake: uint256
    state: uint8
    unbond_at: uint256


nodes: public(HashMap[address, Node])
# Every address that ever registered, in order (for listing).
node_count: public(uint256)
node_at: public(HashMap[uint256, address])
_listed: HashMap[address, bool]

# role bit (1, 2 or 4) -> minimum stake for that role
min_stake: public(HashMap[uint256, uint256])
unbonding_delay: public(uint256)
slasher: public(HashMap[address, bool])


event Registered:
    node: indexed(address)
    roles: uint256
    endpoint: String[256]
    umbral_pk: Bytes[33]
    stake: uint256


event EndpointChanged:
    node: indexed(address)
    endpoint: String[256]
    umbral_pk: Bytes[33]


event StakeAdded:
    node: indexed(address)
    amount: uint256
    stake: uint256


event Leaving:
    node: indexed(address)
    unbond_at: uint256


event Withdrawn:
    node: indexed(address)
    amount: uint256


event Slashed:
    node: indexed(address)
    slasher: indexed(address)
    to: indexed(address)
    amount: uint256
    stake_left: uint256


event MinStakeChanged:
    role: indexed(uint256)
    amount: uint256


event UnbondingDelayChanged:
    delay: uint256


event SlasherChanged:
    slasher: indexed(address)
    allowed: bool


@deploy
def __init__(token: address, unbonding_delay_: uint256):
    assert token != empty(address), "datagora: zero address"
    assert unbonding_delay_ <= MAX_UNBONDING, "datagora: delay too far"
    ownable.__init__()
    TOKEN = token
    self.unbonding_delay = unbonding_delay_


@internal
@view
def _required(roles: uint256) -> uint256:
    total: uint256 = 0
    if roles & ROLE_STORAGE != 0:
        total += self.min_stake[ROLE_STORAGE]
    if roles & ROLE_PROXY != 0:
        total += self.min_stake[ROLE_PROXY]
    if roles & ROLE_COMPUTE != 0:
        total += self.min_stake[ROLE_COMPUTE]
    return total


@internal
@pure
def _check_endpoint(endpoint: String[256]):
    n: uint256 = len(endpoint)
    # The shortest useful endpoint is "http://h"; only http(s) URLs.
    assert n >= 8, "datagora: bad endpoint (not an http(s) URL)"
    assert slice(endpoint, 0, 7) == "http://" or (n >= 9 and slice(endpoint, 0, 8) == "https://"), "datagora: bad endpoint (not an http(s) URL)"


@internal
@pure
def _check_key(umbral_pk: Bytes[33]):
    if len(umbral_pk) == 0:
        return
    assert len(umbral_pk) == 33, "datagora: bad umbral key (33 bytes, compressed)"
    prefix: bytes1 = convert(slice(umbral_pk, 0, 1), bytes1)
    assert prefix == 0x02 or prefix == 0x03, "datagora: bad umbral key (33 bytes, compressed)"


@internal
def _pull(amount: uint256):
    if amount != 0:
        assert extcall IERC20(TOKEN).transferFrom(msg.sender, self, amount, default_return_value=True), "datagora: payment failed"


@external
@nonreentrant
def register(roles: uint256, endpoint: String[256], umbral_pk: Bytes[33], stake: uint256):
    """
    @notice Register the caller as a node with `roles` (bitmask: 1 storage,
            2 proxy, 4 compute), staking `stake` market tokens (approve first).
    """
    state: uint8 = self.nodes[msg.sender].state
    assert state == STATE_NONE or state == STATE_GONE, "datagora: node already registered"
    assert roles != 0 and roles & ALL_ROLES == roles, "datagora: unknown roles"
    self._check_endpoint(endpoint)
    self._check_key(umbral_pk)
    assert stake >= self._required(roles), "datagora: stake below minimum"
    self.nodes[msg.sender] = Node(
        roles=roles, endpoint=endpoint, umbral_pk=umbral_pk, stake=stake,
        state=STATE_ACTIVE, unbond_at=0,
    )
    if not self._listed[msg.sender]:
        self._listed[msg.sender] = True
        i: uint256 = self.node_count
        self.node_at[i] = msg.sender
        self.node_count = i + 1
    self._pull(stake)
    log Registered(node=msg.sender, roles=roles, endpoint=endpoint, umbral_pk=umbral_pk, stake=stake)


@external
def update(endpoint: String[256], umbral_pk: Bytes[33]):
    """
    @notice Change the caller's endpoint and Umbral key (an active node only).
    """
    assert self.nodes[msg.sender].state == STATE_ACTIVE, "datagora: node not active"
    self._check_endpoint(endpoint)
    self._check_key(umbral_pk)
    self.nodes[msg.sender].endpoint = endpoint
    self.nodes[msg.sender].umbral_pk = umbral_pk
    log EndpointChanged(node=msg.sender, endpoint=endpoint, umbral_pk=umbral_pk)


@external
@nonreentrant
def add_stake(amount: uint256):
    """
    @notice Add to the caller's stake (an active node only; approve first).
    """
    assert self.nodes[msg.sender].state == STATE_ACTIVE, "datagora: node not active"
    assert amount != 0, "datagora: zero amount"
    stake: uint256 = self.nodes[msg.sender].stake + amount
    self.nodes[msg.sender].stake = stake
    self._pull(amount)
    log StakeAdded(node=msg.sender, amount=amount, stake=stake)


@external
def leave():
    """
    @notice Stop serving: the node is no longer active, and its stake unbonds
            for `unbonding_delay` seconds (still slashable meanwhile).
    """
    assert self.nodes[msg.sender].state == STATE_ACTIVE, "datagora: node not active"
    unbond_at: uint256 = block.timestamp + self.unbonding_delay
    self.nodes[msg.sender].state = STATE_LEAVING
    self.nodes[msg.sender].unbond_at = unbond_at
    log Leaving(node=msg.sender, unbond_at=unbond_at)


@external
@nonreentrant
def withdraw():
    """
    @notice After the unbonding delay, take back what is left of the stake.
    """
    assert self.nodes[msg.sender].state == STATE_LEAVING, "datagora: node not leaving"
    assert block.timestamp >= self.nodes[msg.sender].unbond_at, "datagora: still unbonding"
    amount: uint256 = self.nodes[msg.sender].stake
    self.nodes[msg.sender].stake = 0
    self.nodes[msg.sender].state = STATE_GONE
    if amount != 0:
        assert extcall IERC20(TOKEN).transfer(msg.sender, amount, default_return_value=True), "datagora: payment failed"
    log Withdrawn(node=msg.sender, amount=amount)


@external
@nonreentrant
def slash(node: address, amount: uint256, to: address) -> uint256:
    """
    @notice Take up to `amount` of `node`'s stake (all of it if less is left)
            and send it to `to`. Approved slashers only; an active or leaving
            node.
    @return What was taken.
    """
    assert self.slasher[msg.sender], "datagora: not a slasher"
    assert to != empty(address), "datagora: zero address"
    assert amount != 0, "datagora: zero amount"
    state: uint8 = self.nodes[node].state
    assert state == STATE_ACTIVE or state == STATE_LEAVING, "datagora: no such node"
    stake: uint256 = self.nodes[node].stake
    taken: uint256 = min(amount, stake)
    self.nodes[node].stake = stake - taken
    if taken != 0:
        assert extcall IERC20(TOKEN).transfer(to, taken, default_return_value=True), "datagora: payment failed"
    log Slashed(node=node, slasher=msg.sender, to=to, amount=taken, stake_left=stake - taken)
    return taken


@external
@view
def is_active(node: address, role: uint256) -> bool:
    """
    @notice Whether `node` is active with every role in `role` and staked at
            least their minimum.
    """
    if self.nodes[node].state != STATE_ACTIVE or role == 0:
        return False
    roles: uint256 = self.nodes[node].roles
    if roles & role != role:
        return False
    return self.nodes[node].stake >= self._required(roles)


@external
@view
def stake_of(node: address) -> uint256:
    return self.nodes[node].stake


@external
@view
def required_stake(roles: uint256) -> uint256:
    """
    @notice The minimum stake for a node with `roles`.
    """
    return self._required(roles)


@external
def set_min_stake(role: uint256, amount: uint256):
    """
    @notice The minimum stake of one role (1, 2 or 4). Admin only.
    """
    ownable._check_owner()
    assert role == ROLE_STORAGE or role == ROLE_PROXY or role == ROLE_COMPUTE, "datagora: unknown role"
    self.min_stake[role] = amount
    log MinStakeChanged(role=role, amount=amount)


@external
def set_unbonding_delay(delay: uint256):
    """
    @notice The delay between `leave` and `withdraw` for later leavers. Admin only.
    """
    ownable._check_owner()
    assert delay <= MAX_UNBONDING, "datagora: delay too far"
    self.unbonding_delay = delay
    log UnbondingDelayChanged(delay=delay)


@external
def set_slasher(slasher_: address, allowed: bool):
    """
    @notice Approve (or stop approving) a contract or account that may slash. Admin only.
    """
    ownable._check_owner()
    assert slasher_ != empty(address), "datagora: zero address"
    self.slasher[slasher_] = allowed
    log SlasherChanged(slasher=slasher_, allowed=allowed)
