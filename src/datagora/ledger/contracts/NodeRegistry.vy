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

STATE_NONE: constant(uint256) = 0  # never registered
STATE_ACTIVE: constant(uint256) = 1
STATE_LEAVING: constant(uint256) = 2  # unbonding until unbond_at
STATE_GONE: constant(uint256) = 3  # withdrew; may register again

MAX_ENDPOINT: constant(uint256) = 256
MAX_UNBONDING: constant(uint256) = 365 * 86400
MAX_STAKE: constant(uint256) = 2**128 - 1

TOKEN: public(immutable(address))

# A node's numbers share one storage slot (one write registers them, one moves a
# stake): stake (bits 0-127) | unbond_at (128-191) | roles (192-199) | state (200-207).
_packed: HashMap[address, uint256]
endpoint_of: public(HashMap[address, String[256]])
umbral_pk_of: public(HashMap[address, Bytes[33]])
# Every address that ever registered, in order (for listing).
node_count: public(uint256)
node_at: public(HashMap[uint256, address])

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
@pure
def _pack(stake: uint256, unbond_at: uint256, roles: uint256, state: uint256) -> uint256:
    return stake | (unbond_at << 128) | (roles << 192) | (state << 200)


@internal
@pure
def _stake(packed: uint256) -> uint256:
    return packed & MAX_STAKE


@internal
@pure
def _unbond_at(packed: uint256) -> uint256:
    return (packed >> 128) & (2**64 - 1)


@internal
@pure
def _roles(packed: uint256) -> uint256:
    return (packed >> 192) & 255


@internal
@pure
def _state(packed: uint256) -> uint256:
    return (packed >> 200) & 255


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
    state: uint256 = self._state(self._packed[msg.sender])
    assert state == STATE_NONE or state == STATE_GONE, "datagora: node already registered"
    assert roles != 0 and roles & ALL_ROLES == roles, "datagora: unknown roles"
    self._check_endpoint(endpoint)
    self._check_key(umbral_pk)
    assert stake <= MAX_STAKE, "datagora: bad amount"
    assert stake >= self._required(roles), "datagora: stake below minimum"
    self._packed[msg.sender] = self._pack(stake, 0, roles, STATE_ACTIVE)
    self.endpoint_of[msg.sender] = endpoint
    self.umbral_pk_of[msg.sender] = umbral_pk
    if state == STATE_NONE:
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
    assert self._state(self._packed[msg.sender]) == STATE_ACTIVE, "datagora: node not active"
    self._check_endpoint(endpoint)
    self._check_key(umbral_pk)
    self.endpoint_of[msg.sender] = endpoint
    self.umbral_pk_of[msg.sender] = umbral_pk
    log EndpointChanged(node=msg.sender, endpoint=endpoint, umbral_pk=umbral_pk)


@external
@nonreentrant
def add_stake(amount: uint256):
    """
    @notice Add to the caller's stake (an active node only; approve first).
    """
    packed: uint256 = self._packed[msg.sender]
    assert self._state(packed) == STATE_ACTIVE, "datagora: node not active"
    assert amount != 0, "datagora: zero amount"
    stake: uint256 = self._stake(packed) + amount
    assert stake <= MAX_STAKE, "datagora: bad amount"
    self._packed[msg.sender] = packed - self._stake(packed) + stake
    self._pull(amount)
    log StakeAdded(node=msg.sender, amount=amount, stake=stake)


@external
def leave():
    """
    @notice Stop serving: the node is no longer active, and its stake unbonds
            for `unbonding_delay` seconds (still slashable meanwhile).
    """
    packed: uint256 = self._packed[msg.sender]
    assert self._state(packed) == STATE_ACTIVE, "datagora: node not active"
    unbond_at: uint256 = block.timestamp + self.unbonding_delay
    self._packed[msg.sender] = self._pack(self._stake(packed), unbond_at, self._roles(packed), STATE_LEAVING)
    log Leaving(node=msg.sender, unbond_at=unbond_at)


@external
@nonreentrant
def withdraw():
    """
    @notice After the unbonding delay, take back what is left of the stake.
    """
    packed: uint256 = self._packed[msg.sender]
    assert self._state(packed) == STATE_LEAVING, "datagora: node not leaving"
    assert block.timestamp >= self._unbond_at(packed), "datagora: still unbonding"
    amount: uint256 = self._stake(packed)
    self._packed[msg.sender] = self._pack(0, self._unbond_at(packed), self._roles(packed), STATE_GONE)
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
    packed: uint256 = self._packed[node]
    state: uint256 = self._state(packed)
    assert state == STATE_ACTIVE or state == STATE_LEAVING, "datagora: no such node"
    stake: uint256 = self._stake(packed)
    taken: uint256 = min(amount, stake)
    self._packed[node] = packed - taken
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
    packed: uint256 = self._packed[node]
    if self._state(packed) != STATE_ACTIVE or role == 0:
        return False
    roles: uint256 = self._roles(packed)
    if roles & role != role:
        return False
    return self._stake(packed) >= self._required(roles)


@external
@view
def stake_of(node: address) -> uint256:
    return self._stake(self._packed[node])


@external
@view
def nodes(node: address) -> (uint256, String[256], Bytes[33], uint256, uint8, uint256):
    """
    @notice A node's record: roles, endpoint, umbral_pk, stake, state (0 none,
            1 active, 2 leaving, 3 gone) and unbond_at.
    """
    packed: uint256 = self._packed[node]
    return (
        self._roles(packed), self.endpoint_of[node], self.umbral_pk_of[node],
        self._stake(packed), convert(self._state(packed), uint8), self._unbond_at(packed),
    )


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
