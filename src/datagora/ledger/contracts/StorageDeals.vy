# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title StorageDeals
@notice Paid storage deals with proofs of data possession.

        A dataset's controller opens a deal for its current version with chosen
        storage nodes: a price per period per node (market currency) for a
        number of periods, all held here in escrow. Each node joins by posting
        the deal's collateral. Every period the chain names `challenges` random
        blocks among the shares a node holds (drawn from the hash of the
        period's first block, unknown until it is mined); the node answers with
        each block and its Merkle paths (block -> share root -> dataset root,
        sha256, RFC 6962) and is paid that period's price. A period left
        unproven past its grace window is refunded to the owner and slashed
        from the node's collateral (then, if a node registry is wired, from its
        registry stake). The owner may end a deal: periods not yet started are
        refunded at once. Formats: docs/formats.md, "Storage deals and proofs".
"""

from ethereum.ercs import IERC20


interface IDataNFT:
    def controller(dataset: uint256) -> address: view
    def version_of(dataset: uint256) -> uint32: view
    def merkle_root(dataset: uint256) -> bytes32: view


interface INodeRegistry:
    def is_active(node: address, role: uint256) -> bool: view
    def stake_of(node: address) -> uint256: view
    def slash(node: address, amount: uint256, to: address): nonpayable


ROLE_STORAGE: constant(uint256) = 1
BLOCK_SIZE: constant(uint256) = 1024
MAX_NODES: constant(uint256) = 16
MAX_CHALLENGES: constant(uint256) = 32
MAX_PERIODS: constant(uint256) = 100000
MAX_DEPTH: constant(uint256) = 40  # any of the three trees: up to 2^40 leaves

PROVEN: constant(uint8) = 1
MISSED: constant(uint8) = 2

TOKEN: public(immutable(address))
DATA_NFT: public(immutable(address))
REGISTRY: public(immutable(address))


struct Layout:
    leaf_count: uint256  # shares in the dataset's tree (chunks * n)
    last_from: uint256  # first leaf of the last chunk (its shares may be shorter)
    full_blocks: uint256  # blocks in a share of any other chunk
    last_blocks: uint256  # blocks in a share of the last chunk


struct Terms:
    price: uint256  # per period per node
    collateral: uint256  # each node posts this to join
    slash: uint256  # taken per missed period
    periods: uint256
    period_blocks: uint256
    grace_blocks: uint256
    challenges: uint256  # blocks asked per node per period


struct Deal:
    owner: address
    dataset: uint256
    version: uint32
    root: bytes32
    layout: Layout
    terms: Terms
    start: uint256  # block; period p draws from block start + p * period_blocks
    end_period: uint256  # periods < end_period are owed; lowered by end_deal
    node_count: uint256


struct Slot:
    node: address
    shares_root: bytes32  # RFC 6962 root over the node's leaf indexes (uint256 each)
    share_count: uint256
    joined: bool
    collateral: uint256  # posted and not yet slashed or returned
    proven: uint256
    missed: uint256
    earned: uint256
    settled: bool


struct Answer:
    entry: uint256  # index in the node's share list, as challenged
    leaf: uint256  # the share's leaf index in the dataset tree
    list_path: DynArray[bytes32, MAX_DEPTH]
    data: Bytes[BLOCK_SIZE]
    block_path: DynArray[bytes32, MAX_DEPTH]
    share_path: DynArray[bytes32, MAX_DEPTH]


deal_count: public(uint256)
deals: HashMap[uint256, Deal]
slots: HashMap[uint256, HashMap[uint256, Slot]]
# deal -> node -> slot index + 1
slot_index: HashMap[uint256, HashMap[address, uint256]]
# deal -> slot -> period -> PROVEN | MISSED
period_state: HashMap[uint256, HashMap[uint256, HashMap[uint256, uint8]]]
# deal -> period -> the draw's block hash, kept once read
seeds: HashMap[uint256, HashMap[uint256, bytes32]]


event DealOpened:
    deal: indexed(uint256)
    dataset: indexed(uint256)
    owner: indexed(address)
    version: uint32
    root: bytes32
    nodes: DynArray[address, MAX_NODES]
    price: uint256
    periods: uint256
    period_blocks: uint256
    challenges: uint256
    escrow: uint256


event NodeJoined:
    deal: indexed(uint256)
    dataset: indexed(uint256)
    node: indexed(address)
    collateral: uint256


event ProofAccepted:
    deal: indexed(uint256)
    dataset: indexed(uint256)
    node: indexed(address)
    period: uint256
    paid: uint256


event PeriodMissed:
    deal: indexed(uint256)
    dataset: indexed(uint256)
    node: indexed(address)
    period: uint256
    refunded: uint256
    slashed: uint256
    reporter: address


event NodeSettled:
    deal: indexed(uint256)
    dataset: indexed(uint256)
    node: indexed(address)
    missed: uint256
    refunded: uint256
    slashed: uint256
    returned: uint256


event DealEnded:
    deal: indexed(uint256)
    dataset: indexed(uint256)
    owner: indexed(address)
    end_period: uint256
    refunded: uint256


@deploy
def __init__(token: address, data_nft: address, registry: address):
    TOKEN = token
    DATA_NFT = data_nft
    REGISTRY = registry


# -- Merkle (RFC 6962 / RFC 9162 2.1.3.2, as datagora.storage.merkle) --------------


@internal
@pure
def _climb(leaf_hash: bytes32, index: uint256, size: uint256, path: DynArray[bytes32, MAX_DEPTH]) -> bytes32:
    """The root `path` leads to from leaf `index` of a tree of `size`, or empty."""
    if index >= size:
        return empty(bytes32)
    fn: uint256 = index
    sn: uint256 = size - 1
    r: bytes32 = leaf_hash
    for p: bytes32 in path:
        if sn == 0:
            return empty(bytes32)
        if fn & 1 == 1 or fn == sn:
            r = sha256(concat(b"\x01", p, r))
            for _: uint256 in range(256):
                if fn & 1 == 1 or fn == 0:
                    break
                fn = fn >> 1
                sn = sn >> 1
        else:
            r = sha256(concat(b"\x01", r, p))
        fn = fn >> 1
        sn = sn >> 1
    if sn != 0:
        return empty(bytes32)
    return r


# -- periods and challenges ----------------------------------------------------------


@internal
@view
def _seed(deal: uint256, period: uint256) -> bytes32:
    kept: bytes32 = self.seeds[deal][period]
    if kept != empty(bytes32):
        return kept
    d: Deal = self.deals[deal]
    at: uint256 = d.start + period * d.terms.period_blocks
    if at >= block.number or block.number - at > 256:
        return empty(bytes32)
    return blockhash(at)


@internal
@pure
def _challenge(seed: bytes32, deal: uint256, node: address, period: uint256, i: uint256) -> uint256:
    return convert(keccak256(abi_encode(seed, deal, node, period, i)), uint256)


@external
def draw(deal: uint256, period: uint256) -> bytes32:
    """
    @notice Keep period `period`'s seed (the hash of its first block) past the
            256 blocks the EVM remembers. Anyone may call; proving does it too.
    """
    seed: bytes32 = self._seed(deal, period)
    assert seed != empty(bytes32), "datagora: the period's seed block is not mined or forgotten"
    self.seeds[deal][period] = seed
    return seed


@external
@view
def seed_of(deal: uint256, period: uint256) -> bytes32:
    """
    @notice The seed of `period` (empty until its first block is mined, or if it
            was forgotten before anyone drew it).
    """
    return self._seed(deal, period)


@external
@view
def challenge(deal: uint256, node: address, period: uint256, i: uint256) -> (uint256, uint256):
    """
    @notice Challenge `i` of `node` in `period`: (entry in its share list, block
            selector; the block is selector % the share's block count).
    """
    seed: bytes32 = self._seed(deal, period)
    assert seed != empty(bytes32), "datagora: no seed for that period"
    slot: Slot = self.slots[deal][self.slot_index[deal][node] - 1]
    r: uint256 = self._challenge(seed, deal, node, period, i)
    return r % slot.share_count, r >> 128


@external
@view
def current_period(deal: uint256) -> uint256:
    """
    @notice The period whose draw block is the latest mined (0 before the start).
    """
    d: Deal = self.deals[deal]
    assert d.owner != empty(address), "datagora: no such deal"
    if block.number <= d.start:
        return 0
    return (block.number - d.start - 1) // d.terms.period_blocks


# -- deals ---------------------------------------------------------------------------


@external
def open_deal(
    dataset: uint256,
    version: uint32,
    nodes: DynArray[address, MAX_NODES],
    shares_roots: DynArray[bytes32, MAX_NODES],
    share_counts: DynArray[uint256, MAX_NODES],
    layout: Layout,
    terms: Terms,
) -> uint256:
    """
    @notice Open a deal for the current version of `dataset` (its controller
            only), escrowing price * periods * nodes. Node i holds the
            `share_counts[i]` shares whose leaf indexes are committed by
            `shares_roots[i]`; it checks them against the manifest before joining.
    """
    assert staticcall IDataNFT(DATA_NFT).controller(dataset) == msg.sender, "datagora: not controller"
    assert staticcall IDataNFT(DATA_NFT).version_of(dataset) == version, "datagora: not the current version"
    root: bytes32 = staticcall IDataNFT(DATA_NFT).merkle_root(dataset)
    assert root != empty(bytes32), "datagora: the dataset records no Merkle root"
    count: uint256 = len(nodes)
    assert count != 0, "datagora: no nodes"
    assert len(shares_roots) == count and len(share_counts) == count, "datagora: one share list per node"
    assert layout.leaf_count != 0 and layout.last_from < layout.leaf_count, "datagora: bad layout"
    assert layout.full_blocks != 0 and layout.last_blocks != 0, "datagora: bad layout"
    assert terms.periods != 0 and terms.periods <= MAX_PERIODS, "datagora: bad number of periods"
    assert terms.period_blocks != 0, "datagora: zero period length"
    assert terms.grace_blocks != 0, "datagora: zero grace window"
    assert terms.challenges != 0 and terms.challenges <= MAX_CHALLENGES, "datagora: bad challenge count"
    # Without a registry stake behind it, a slash can take only deal collateral.
    assert terms.slash <= terms.collateral or REGISTRY != empty(address), "datagora: slash above collateral"
    deal: uint256 = self.deal_count + 1
    self.deal_count = deal
    for i: uint256 in range(MAX_NODES):
        if i == count:
            break
        node: address = nodes[i]
        assert node != empty(address), "datagora: zero node"
        assert self.slot_index[deal][node] == 0, "datagora: node listed twice"
        assert share_counts[i] != 0 and share_counts[i] <= layout.leaf_count, "datagora: bad share count"
        assert shares_roots[i] != empty(bytes32), "datagora: empty share list"
        self.slot_index[deal][node] = i + 1
        self.slots[deal][i] = Slot(
            node=node,
            shares_root=shares_roots[i],
            share_count=share_counts[i],
            joined=False,
            collateral=0,
            proven=0,
            missed=0,
            earned=0,
            settled=False,
        )
    escrow: uint256 = terms.price * terms.periods * count
    self.deals[deal] = Deal(
        owner=msg.sender,
        dataset=dataset,
        version=version,
        root=root,
        layout=layout,
        terms=terms,
        start=block.number,
        end_period=terms.periods,
        node_count=count,
    )
    if escrow != 0:
        assert extcall IERC20(TOKEN).transferFrom(msg.sender, self, escrow, default_return_value=True), "datagora: escrow transfer failed"
    log DealOpened(
        deal=deal,
        dataset=dataset,
        owner=msg.sender,
        version=version,
        root=root,
        nodes=nodes,
        price=terms.price,
        periods=terms.periods,
        period_blocks=terms.period_blocks,
        challenges=terms.challenges,
        escrow=escrow,
    )
    return deal


@internal
@view
def _slot(deal: uint256, node: address) -> uint256:
    index: uint256 = self.slot_index[deal][node]
    assert index != 0, "datagora: not a node of this deal"
    return index - 1


@external
def join(deal: uint256):
    """
    @notice Post this deal's collateral (the caller must be one of its nodes).
    """
    i: uint256 = self._slot(deal, msg.sender)
    assert not self.slots[deal][i].joined, "datagora: already joined"
    d: Deal = self.deals[deal]
    if REGISTRY != empty(address):
        assert staticcall INodeRegistry(REGISTRY).is_active(msg.sender, ROLE_STORAGE), "datagora: not an active storage node"
    self.slots[deal][i].joined = True
    self.slots[deal][i].collateral = d.terms.collateral
    if d.terms.collateral != 0:
        assert extcall IERC20(TOKEN).transferFrom(msg.sender, self, d.terms.collateral, default_return_value=True), "datagora: collateral transfer failed"
    log NodeJoined(deal=deal, dataset=d.dataset, node=msg.sender, collateral=d.terms.collateral)


@internal
@view
def _window_end(d: Deal, period: uint256) -> uint256:
    return d.start + (period + 1) * d.terms.period_blocks + d.terms.grace_blocks


@external
def prove(deal: uint256, period: uint256, answers: DynArray[Answer, MAX_CHALLENGES]):
    """
    @notice Answer period `period`'s challenges (the caller must be a joined node
            of the deal); pays that period's price to the caller.
    """
    i: uint256 = self._slot(deal, msg.sender)
    d: Deal = self.deals[deal]
    slot: Slot = self.slots[deal][i]
    assert slot.joined, "datagora: join the deal first"
    assert period < d.end_period, "datagora: the deal does not cover that period"
    assert self.period_state[deal][i][period] == 0, "datagora: period already settled"
    assert block.number < self._window_end(d, period), "datagora: the period's window has closed"
    seed: bytes32 = self._seed(deal, period)
    assert seed != empty(bytes32), "datagora: the period's seed block is not mined or forgotten"
    self.seeds[deal][period] = seed
    assert len(answers) == d.terms.challenges, "datagora: wrong number of answers"
    for c: uint256 in range(MAX_CHALLENGES):
        if c == len(answers):
            break
        r: uint256 = self._challenge(seed, deal, msg.sender, period, c)
        entry: uint256 = answers[c].entry
        leaf: uint256 = answers[c].leaf
        assert entry == r % slot.share_count, "datagora: answer for another entry"
        # The entry's leaf index, under the node's share list.
        listed: bytes32 = self._climb(sha256(concat(b"\x00", convert(leaf, bytes32))), entry, slot.share_count, answers[c].list_path)
        assert listed == slot.shares_root and listed != empty(bytes32), "datagora: leaf not in the node's share list"
        assert leaf < d.layout.leaf_count, "datagora: leaf outside the dataset"
        blocks: uint256 = d.layout.full_blocks
        if leaf >= d.layout.last_from:
            blocks = d.layout.last_blocks
        index: uint256 = (r >> 128) % blocks
        share_root: bytes32 = self._climb(sha256(concat(b"\x00", answers[c].data)), index, blocks, answers[c].block_path)
        assert share_root != empty(bytes32), "datagora: bad block path"
        top: bytes32 = self._climb(sha256(concat(b"\x00", share_root)), leaf, d.layout.leaf_count, answers[c].share_path)
        assert top == d.root, "datagora: block not proven under the dataset root"
    self.period_state[deal][i][period] = PROVEN
    self.slots[deal][i].proven = slot.proven + 1
    self.slots[deal][i].earned = slot.earned + d.terms.price
    if d.terms.price != 0:
        assert extcall IERC20(TOKEN).transfer(msg.sender, d.terms.price, default_return_value=True), "datagora: payment failed"
    log ProofAccepted(deal=deal, dataset=d.dataset, node=msg.sender, period=period, paid=d.terms.price)


@internal
def _take(d: Deal, deal: uint256, i: uint256, node: address, amount: uint256) -> uint256:
    """Slash up to `amount`: collateral first, then registry stake; paid to the owner."""
    held: uint256 = self.slots[deal][i].collateral
    taken: uint256 = min(amount, held)
    self.slots[deal][i].collateral = held - taken
    rest: uint256 = amount - taken
    extra: uint256 = 0
    if rest != 0 and REGISTRY != empty(address):
        extra = min(rest, staticcall INodeRegistry(REGISTRY).stake_of(node))
        if extra != 0:
            extcall INodeRegistry(REGISTRY).slash(node, extra, d.owner)
    if taken != 0:
        assert extcall IERC20(TOKEN).transfer(d.owner, taken, default_return_value=True), "datagora: slash transfer failed"
    return taken + extra


@external
def slash_missed(deal: uint256, node: address, period: uint256):
    """
    @notice Anyone: after its grace window, an unproven period is refunded to
            the owner and `slash` is taken from the node for it.
    """
    i: uint256 = self._slot(deal, node)
    d: Deal = self.deals[deal]
    assert period < d.end_period, "datagora: the deal does not cover that period"
    assert not self.slots[deal][i].settled, "datagora: node already settled"
    assert self.period_state[deal][i][period] == 0, "datagora: period already settled"
    assert block.number >= self._window_end(d, period), "datagora: the period's window is still open"
    self.period_state[deal][i][period] = MISSED
    self.slots[deal][i].missed += 1
    if d.terms.price != 0:
        assert extcall IERC20(TOKEN).transfer(d.owner, d.terms.price, default_return_value=True), "datagora: refund failed"
    # A node that never joined never agreed to the deal: nothing of its is taken.
    slashed: uint256 = 0
    if self.slots[deal][i].joined:
        slashed = self._take(d, deal, i, node, d.terms.slash)
    log PeriodMissed(deal=deal, dataset=d.dataset, node=node, period=period, refunded=d.terms.price, slashed=slashed, reporter=msg.sender)


@external
def settle(deal: uint256, node: address):
    """
    @notice Anyone, once every window of the deal has closed: periods still
            unproven are refunded and slashed, the rest of the collateral goes
            back to the node.
    """
    i: uint256 = self._slot(deal, node)
    d: Deal = self.deals[deal]
    assert block.number >= d.start + d.end_period * d.terms.period_blocks + d.terms.grace_blocks, "datagora: the deal is still running"
    slot: Slot = self.slots[deal][i]
    assert not slot.settled, "datagora: node already settled"
    self.slots[deal][i].settled = True
    unsettled: uint256 = d.end_period - slot.proven - slot.missed
    refund: uint256 = unsettled * d.terms.price
    if refund != 0:
        assert extcall IERC20(TOKEN).transfer(d.owner, refund, default_return_value=True), "datagora: refund failed"
    slashed: uint256 = 0
    if slot.joined:
        slashed = self._take(d, deal, i, node, unsettled * d.terms.slash)
    self.slots[deal][i].missed = slot.missed + unsettled
    returned: uint256 = self.slots[deal][i].collateral
    self.slots[deal][i].collateral = 0
    if returned != 0:
        assert extcall IERC20(TOKEN).transfer(node, returned, default_return_value=True), "datagora: return failed"
    log NodeSettled(deal=deal, dataset=d.dataset, node=node, missed=unsettled, refunded=refund, slashed=slashed, returned=returned)


@external
def end_deal(deal: uint256):
    """
    @notice The owner ends a deal: periods that have not started are refunded
            now; the current one may still be proven.
    """
    d: Deal = self.deals[deal]
    assert d.owner == msg.sender, "datagora: not the deal's owner"
    current: uint256 = 0
    if block.number > d.start:
        current = (block.number - d.start - 1) // d.terms.period_blocks
    new_end: uint256 = min(d.end_period, current + 1)
    assert new_end < d.end_period, "datagora: the deal has no future periods"
    refund: uint256 = (d.end_period - new_end) * d.terms.price * d.node_count
    self.deals[deal].end_period = new_end
    if refund != 0:
        assert extcall IERC20(TOKEN).transfer(msg.sender, refund, default_return_value=True), "datagora: refund failed"
    log DealEnded(deal=deal, dataset=d.dataset, owner=msg.sender, end_period=new_end, refunded=refund)


# -- views ---------------------------------------------------------------------------


@external
@view
def deal(deal: uint256) -> Deal:
    d: Deal = self.deals[deal]
    assert d.owner != empty(address), "datagora: no such deal"
    return d


@external
@view
def slot(deal: uint256, index: uint256) -> Slot:
    assert index < self.deals[deal].node_count, "datagora: no such slot"
    return self.slots[deal][index]


@external
@view
def slot_of(deal: uint256, node: address) -> Slot:
    return self.slots[deal][self._slot(deal, node)]


@external
@view
def state_of(deal: uint256, node: address, period: uint256) -> uint8:
    """
    @notice 0 open or unproven, 1 proven, 2 missed.
    """
    return self.period_state[deal][self._slot(deal, node)][period]
