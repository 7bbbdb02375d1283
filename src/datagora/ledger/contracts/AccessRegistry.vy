# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title AccessRegistry
@notice The request / permission / handshake records of datagora. A consumer
        files a request for a dataset (with a purpose and their public
        re-encryption key); the dataset's controller grants it until an expiry,
        denies it with a reason, or later revokes the grant. A grant's id is
        its request's id. A consumer may hold up to eight live grants for a
        dataset; any one of them gives access. Per dataset, the controller keeps an allow-list
        (access without a request) and a deny-list (no access, no requests).
        The controller may also restrict sales (exchange, dispenser, orders)
        to the allow-list. The exchange, dispenser and datatokens learn through
        flags in the DataNFT whether a dataset has a deny-list or restricted
        sales, and only then read the lists: a refusal costs the buyer nothing.
        Every step is an event. A revoked grant stays revoked.
        An account may authorise agent keys that delegate key fragments for its
        datasets on its behalf (and nothing else): proxies accept deliveries
        signed by a dataset's controller or by one of its current delegates.
        Per dataset and datatoken service, the controller may set an access
        condition (a small encoded tree of time windows, token holdings, the
        allow-list and the order/grant rule, combined with AND / OR; format in
        docs/ledger.md) that proxies evaluate before every re-encryption.
"""

interface IDataNFT:
    def controller(dataset: uint256) -> address: view
    def is_active(dataset: uint256) -> bool: view
    def set_list_flags(dataset: uint256, flags: uint256): nonpayable


STATUS_NONE: constant(uint8) = 0
STATUS_PENDING: constant(uint8) = 1
STATUS_GRANTED: constant(uint8) = 2
STATUS_DENIED: constant(uint8) = 3
STATUS_REVOKED: constant(uint8) = 4

LIST_NONE: constant(uint8) = 0
LIST_ALLOW: constant(uint8) = 1
LIST_DENY: constant(uint8) = 2

DATA_NFT: public(immutable(address))

request_count: public(uint256)
request_dataset: public(HashMap[uint256, uint256])
# request id -> consumer (160 bits) | status (8 bits) << 160 | expires_at (64 bits) << 168
_request: HashMap[uint256, uint256]
MAX_LIVE_GRANTS: constant(uint256) = 8

# dataset -> consumer -> ids of the consumer's granted requests that may still be
# live (pruned of revoked and expired ones whenever a new grant is added)
_grants: HashMap[uint256, HashMap[address, DynArray[uint256, MAX_LIVE_GRANTS]]]
# dataset -> account -> LIST_*
list_of: public(HashMap[uint256, HashMap[address, uint8]])
# dataset -> consumer -> id of the consumer's latest request (0: none); lets a proxy
# say why it refuses without scanning the chain's logs
latest_request: public(HashMap[uint256, HashMap[address, uint256]])
# dataset -> number of deny-listed accounts
deny_count: public(HashMap[uint256, uint256])
# dataset -> only allow-listed accounts may buy, take or order
sales_restricted: public(HashMap[uint256, bool])
# dataset -> service -> encoded access condition (empty: none, the order/grant rule)
MAX_CONDITION: constant(uint256) = 512
CONDITION_VERSION: constant(bytes1) = 0x01
_condition: HashMap[uint256, HashMap[uint256, Bytes[MAX_CONDITION]]]
# dataset -> service -> keccak256 of the condition (zero: none); one word, so a proxy
# reads it in the same batch as its other views and fetches the blob only when it changed
condition_hash: public(HashMap[uint256, HashMap[uint256, bytes32]])
# owner -> agent key -> may sign key-fragment deliveries for the owner's datasets
is_delegate: public(HashMap[address, HashMap[address, bool]])


struct RequestInfo:
    dataset: uint256
    consumer: address
    status: uint8
    expires_at: uint256


event AccessRequested:
    request_id: indexed(uint256)
    dataset: indexed(uint256)
    consumer: indexed(address)
    purpose: String[256]
    consumer_key: Bytes[128]


event AccessGranted:
    request_id: indexed(uint256)
    dataset: indexed(uint256)
    consumer: indexed(address)
    expires_at: uint256


event AccessDenied:
    request_id: indexed(uint256)
    dataset: indexed(uint256)
    consumer: indexed(address)
    reason: String[256]


event AccessRevoked:
    request_id: indexed(uint256)
    dataset: indexed(uint256)
    consumer: indexed(address)


event ListChanged:
    dataset: indexed(uint256)
    account: indexed(address)
    list_kind: uint8


event SalesRestricted:
    dataset: indexed(uint256)
    restricted: bool


event DelegateSet:
    owner: indexed(address)
    delegate: indexed(address)
    allowed: bool


event ConditionSet:
    dataset: indexed(uint256)
    service: indexed(uint256)
    condition_hash: bytes32
    condition: Bytes[MAX_CONDITION]


@deploy
def __init__(data_nft: address):
    DATA_NFT = data_nft


@internal
@view
def _check_controller(dataset: uint256):
    assert msg.sender == staticcall IDataNFT(DATA_NFT).controller(dataset), "datagora: not controller"


@internal
@view
def _consumer(packed: uint256) -> address:
    return convert(packed & convert(max_value(uint160), uint256), address)


@internal
@view
def _status(packed: uint256) -> uint8:
    return convert((packed >> 160) & 255, uint8)


@external
def request(dataset: uint256, purpose: String[256], consumer_key: Bytes[128]) -> uint256:
    """
    @notice Ask for access to `dataset`.
    @return The request id.
    """
    assert staticcall IDataNFT(DATA_NFT).is_active(dataset), "datagora: dataset not active"
    assert self.list_of[dataset][msg.sender] != LIST_DENY, "datagora: consumer is deny-listed"
    request_id: uint256 = self.request_count + 1
    self.request_count = request_id
    self.request_dataset[request_id] = dataset
    self._request[request_id] = convert(msg.sender, uint256) | (convert(STATUS_PENDING, uint256) << 160)
    self.latest_request[dataset][msg.sender] = request_id
    log AccessRequested(request_id=request_id, dataset=dataset, consumer=msg.sender, purpose=purpose, consumer_key=consumer_key)
    return request_id


@internal
@view
def _live(packed: uint256) -> bool:
    return self._status(packed) == STATUS_GRANTED and (packed >> 168) > block.timestamp


@internal
@view
def _pending(request_id: uint256) -> (uint256, uint256):
    dataset: uint256 = self.request_dataset[request_id]
    assert dataset != 0, "datagora: no such request"
    self._check_controller(dataset)
    packed: uint256 = self._request[request_id]
    assert self._status(packed) == STATUS_PENDING, "datagora: request not pending"
    return dataset, packed


@external
def grant(request_id: uint256, expires_at: uint256):
    """
    @notice Grant a pending request until `expires_at` (unix seconds). Only the
            dataset's controller.
    """
    dataset: uint256 = 0
    packed: uint256 = 0
    dataset, packed = self._pending(request_id)
    assert expires_at > block.timestamp, "datagora: expiry in the past"
    assert expires_at < 2**64, "datagora: expiry too far"
    consumer: address = self._consumer(packed)
    assert self.list_of[dataset][consumer] != LIST_DENY, "datagora: consumer is deny-listed"
    self._request[request_id] = convert(consumer, uint256) | (convert(STATUS_GRANTED, uint256) << 160) | (expires_at << 168)
    live: DynArray[uint256, MAX_LIVE_GRANTS] = []
    for rid: uint256 in self._grants[dataset][consumer]:
        if self._live(self._request[rid]):
            live.append(rid)
    assert len(live) < MAX_LIVE_GRANTS, "datagora: too many live grants for this consumer"
    live.append(request_id)
    self._grants[dataset][consumer] = live
    log AccessGranted(request_id=request_id, dataset=dataset, consumer=consumer, expires_at=expires_at)


@external
def deny(request_id: uint256, reason: String[256]):
    """
    @notice Deny a pending request, saying why. Only the dataset's controller.
    """
    dataset: uint256 = 0
    packed: uint256 = 0
    dataset, packed = self._pending(request_id)
    consumer: address = self._consumer(packed)
    self._request[request_id] = convert(consumer, uint256) | (convert(STATUS_DENIED, uint256) << 160)
    log AccessDenied(request_id=request_id, dataset=dataset, consumer=consumer, reason=reason)


@external
def revoke(request_id: uint256):
    """
    @notice Revoke a grant, for good. Only the dataset's controller.
    """
    dataset: uint256 = self.request_dataset[request_id]
    assert dataset != 0, "datagora: no such request"
    self._check_controller(dataset)
    packed: uint256 = self._request[request_id]
    assert self._status(packed) == STATUS_GRANTED, "datagora: not granted"
    consumer: address = self._consumer(packed)
    self._request[request_id] = (packed & ~(255 << 160)) | (convert(STATUS_REVOKED, uint256) << 160)
    log AccessRevoked(request_id=request_id, dataset=dataset, consumer=consumer)


@external
def set_list(dataset: uint256, account: address, list_kind: uint8):
    """
    @notice Put `account` on the allow-list (1) or deny-list (2) of `dataset`,
            or off both (0). Only the dataset's controller.
    """
    self._check_controller(dataset)
    assert account != empty(address), "datagora: zero address"
    assert list_kind <= LIST_DENY, "datagora: unknown list"
    old: uint8 = self.list_of[dataset][account]
    self.list_of[dataset][account] = list_kind
    if old != list_kind and (old == LIST_DENY or list_kind == LIST_DENY):
        count: uint256 = self.deny_count[dataset]
        if list_kind == LIST_DENY:
            count += 1
        else:
            count -= 1
        self.deny_count[dataset] = count
        if count == 0 or (count == 1 and list_kind == LIST_DENY):
            # 0 -> 1 or 1 -> 0 deny-listed accounts: the DataNFT's flag follows.
            self._sync_flags(dataset)
    log ListChanged(dataset=dataset, account=account, list_kind=list_kind)


@internal
def _sync_flags(dataset: uint256):
    flags: uint256 = 0
    if self.deny_count[dataset] != 0:
        flags |= 1
    if self.sales_restricted[dataset]:
        flags |= 2
    extcall IDataNFT(DATA_NFT).set_list_flags(dataset, flags)


@external
def restrict_sales(dataset: uint256, restricted: bool):
    """
    @notice Let only allow-listed accounts buy, take from the dispenser or order
            `dataset` (True), or anyone not deny-listed (False). Only the controller.
    """
    self._check_controller(dataset)
    assert self.sales_restricted[dataset] != restricted, "datagora: restriction unchanged"
    self.sales_restricted[dataset] = restricted
    self._sync_flags(dataset)
    log SalesRestricted(dataset=dataset, restricted=restricted)


@external
def set_delegate(delegate: address, allowed: bool):
    """
    @notice Authorise (True) or revoke (False) `delegate` as an agent key that
            delegates key fragments for the caller's datasets. A delegate can do
            nothing else: it holds no NFT, datatoken or grant right.
    """
    assert delegate != empty(address), "datagora: zero address"
    assert delegate != msg.sender, "datagora: an account is its own delegate already"
    self.is_delegate[msg.sender][delegate] = allowed
    log DelegateSet(owner=msg.sender, delegate=delegate, allowed=allowed)


@external
def set_condition(dataset: uint256, service: uint256, condition: Bytes[MAX_CONDITION]):
    """
    @notice Set the access condition of `dataset`'s `service` (an encoded tree, its
            first byte the format version), or clear it (empty). Only the
            dataset's controller. Proxies check the full structure before use and
            refuse access under a condition they cannot read; clients check it
            before sending.
    """
    self._check_controller(dataset)
    digest: bytes32 = empty(bytes32)
    if len(condition) != 0:
        assert convert(slice(condition, 0, 1), bytes1) == CONDITION_VERSION, "datagora: unknown condition format"
        digest = keccak256(condition)
    self._condition[dataset][service] = condition
    self.condition_hash[dataset][service] = digest
    log ConditionSet(dataset=dataset, service=service, condition_hash=digest, condition=condition)


@external
@view
def condition_of(dataset: uint256, service: uint256) -> Bytes[MAX_CONDITION]:
    """
    @notice The encoded access condition of `dataset`'s `service` (empty: none).
    """
    return self._condition[dataset][service]


@external
@view
def block_time() -> uint256:
    """
    @notice The timestamp of the block a call runs in: proxies read it in the same
            batch as the state a condition's time window is checked against.
    """
    return block.timestamp


@external
@view
def get_request(request_id: uint256) -> RequestInfo:
    packed: uint256 = self._request[request_id]
    assert packed != 0, "datagora: no such request"
    return RequestInfo(
        dataset=self.request_dataset[request_id],
        consumer=self._consumer(packed),
        status=self._status(packed),
        expires_at=packed >> 168,
    )


@external
@view
def has_access(dataset: uint256, consumer: address) -> bool:
    """
    @notice True if `consumer` may read `dataset` now through this registry:
            allow-listed, or holding an unexpired, unrevoked grant; never when
            deny-listed or the dataset is not active.
    """
    kind: uint8 = self.list_of[dataset][consumer]
    if kind == LIST_DENY or not staticcall IDataNFT(DATA_NFT).is_active(dataset):
        return False
    if kind == LIST_ALLOW:
        return True
    for rid: uint256 in self._grants[dataset][consumer]:
        if self._live(self._request[rid]):
            return True
    return False


@external
@view
def live_grants(dataset: uint256, consumer: address) -> DynArray[uint256, MAX_LIVE_GRANTS]:
    """
    @notice The consumer's granted requests for `dataset` that are unrevoked and unexpired.
    """
    live: DynArray[uint256, MAX_LIVE_GRANTS] = []
    for rid: uint256 in self._grants[dataset][consumer]:
        if self._live(self._request[rid]):
            live.append(rid)
    return live
