"""StorageDeals on the embedded chain and on anvil: a node is paid exactly for
the periods it proves, a node that drops blocks is slashed, forged answers are
refused, periods are proven once, the owner's end refunds, and only a dataset's
controller opens a deal for it."""

from __future__ import annotations

import dataclasses

import pytest

from datagora.ledger import Ledger
from datagora.ledger.deals import Answer, PeriodState, StorageDeals
from datagora.ledger.errors import ContractRuleError as LedgerError
from datagora.storage.blocks import block_count, block_proof
from datagora.storage.deals import challenge_indexes
from datagora.storage.errors import IntegrityError
from datagora.storage.merkle import MerkleTree
from deals_helpers import (
    COLLATERAL,
    NODES,
    PRICE,
    SLASH,
    Setup,
    mine_to,
    open_deal,
    setup,
    terms,
)
from helpers import OTHER, OWNER


def answers_anyway(s: Setup, deal: int, j: int) -> list[Answer]:
    """What a node that lost blocks can send: its (damaged) bytes, honest paths."""
    info = s.deals.deal(deal)
    node = NODES[j].address
    seed = s.deals.seed_of(deal, 0)
    hashes = list(s.verified.manifest.share_hashes())
    held = s.lists[j]
    out = []
    for entry, selector in challenge_indexes(
        seed, deal, node, 0, info.terms.challenges, held.count
    ):
        leaf = held.leaves[entry]
        data = s.held[j].shares[hashes[leaf]]
        block, path, _ = block_proof(data, selector % block_count(len(data)))
        out.append(
            Answer(
                entry,
                leaf,
                held.tree.proof(entry).path,
                block,
                path.path,
                MerkleTree(hashes).proof(leaf).path,
            )
        )
    return out


def join_all(s: Setup, deal: int) -> None:
    for prover in s.provers:
        prover.join(deal)


def test_a_deal_pays_exactly_what_was_proven(ledger: Ledger) -> None:
    s = setup(ledger)
    token = ledger.market_token
    owner_before = token.balance_of(OWNER.address)
    deal = open_deal(s, terms(periods=3))
    assert token.balance_of(OWNER.address) == owner_before - 3 * 3 * PRICE
    join_all(s, deal)
    info = s.deals.deal(deal)
    node0, node1 = s.provers[0], s.provers[1]
    before = [token.balance_of(n.address) for n in NODES]
    # Node 0 proves periods 0 and 2, node 1 only period 1, node 2 nothing.
    gas = []
    for period, provers in ((0, [node0]), (1, [node1]), (2, [node0])):
        mine_to(ledger, info.seed_block(period) + 1)
        for p in provers:
            gas.append(p.prove(deal, period))
    assert s.deals.state_of(deal, NODES[0].address, 1) is PeriodState.OPEN
    mine_to(ledger, info.window_end(2))
    for node in NODES:
        s.deals.settle(OTHER, deal, node.address)
    paid = [token.balance_of(n.address) - b for n, b in zip(NODES, before, strict=True)]
    # Each node got its price per proven period, lost SLASH per unproven one.
    assert paid == [
        2 * PRICE - 1 * SLASH + COLLATERAL,
        1 * PRICE - 2 * SLASH + COLLATERAL,
        -3 * SLASH + COLLATERAL,
    ]
    slots = s.deals.slots(deal)
    assert [(x.proven, x.missed, x.earned) for x in slots] == [
        (2, 1, 2 * PRICE),
        (1, 2, PRICE),
        (0, 3, 0),
    ]
    # The owner got back the price of every unproven period and every slash.
    assert token.balance_of(OWNER.address) == owner_before - 3 * PRICE + 6 * SLASH
    assert token.balance_of(s.deals.address) == 0
    assert max(gas) < 1_500_000, gas


def test_a_node_that_drops_blocks_is_slashed(ledger: Ledger) -> None:
    s = setup(ledger)
    deal = open_deal(s, terms(periods=2))
    join_all(s, deal)
    info = s.deals.deal(deal)
    # Node 2 silently zeroes one block of every share it holds (here 1 of ~3).
    for address in list(s.held[2].shares):
        s.held[2].drop_block(address, 0)
    mine_to(ledger, info.seed_block(0) + 1)
    s.provers[0].prove(deal, 0)
    with pytest.raises(IntegrityError, match="damaged"):
        s.provers[2].prove(deal, 0)
    # It answers anyway with the bytes it has: the contract refuses them.
    with pytest.raises(LedgerError, match=r"not proven|bad block path"):
        s.deals.prove(NODES[2], deal, 0, answers_anyway(s, deal, 2))
    # Nor can it pass off another node's answers as its own.
    with pytest.raises(LedgerError):
        s.deals.prove(NODES[2], deal, 0, s.provers[0].answers(deal, 0))
    token = ledger.market_token
    owner_before = token.balance_of(OWNER.address)
    with pytest.raises(LedgerError, match="still open"):
        s.deals.slash_missed(OTHER, deal, NODES[2].address, 0)
    mine_to(ledger, info.window_end(0))
    s.deals.slash_missed(OTHER, deal, NODES[2].address, 0)  # anyone may report it
    assert s.deals.state_of(deal, NODES[2].address, 0) is PeriodState.MISSED
    assert token.balance_of(OWNER.address) == owner_before + PRICE + SLASH
    assert s.deals.slot_of(deal, NODES[2].address).collateral == COLLATERAL - SLASH
    with pytest.raises(LedgerError, match="already settled"):
        s.deals.slash_missed(OTHER, deal, NODES[2].address, 0)
    with pytest.raises(LedgerError, match="already settled"):
        s.deals.slash_missed(OTHER, deal, NODES[0].address, 0)  # proven: not slashable
    # The dataset's audit timeline shows the deal, the proof and the miss.
    from datagora.audit import Kind, timeline

    kinds = [(e.kind, e.text) for e in timeline(ledger, s.dataset)]
    assert [k for k, _ in kinds if k in (Kind.DEAL, Kind.PROOF, Kind.MISSED)] == [
        Kind.DEAL,
        Kind.DEAL,
        Kind.DEAL,
        Kind.DEAL,
        Kind.PROOF,
        Kind.MISSED,
    ]
    assert any(f"{NODES[2].address} missed period 0" in t for _, t in kinds)


def test_wrong_block_or_wrong_path_is_refused(ledger: Ledger) -> None:
    s = setup(ledger)
    deal = open_deal(s, terms(periods=1, challenges=4))
    join_all(s, deal)
    info = s.deals.deal(deal)
    mine_to(ledger, info.seed_block(0) + 1)
    node = NODES[0]
    answers = s.provers[0].answers(deal, 0)
    a = answers[1]
    bad_block = dataclasses.replace(a, data=bytes(len(a.data)))
    bad_path = dataclasses.replace(a, block_path=(bytes(32), *a.block_path[1:]))
    bad_share_path = dataclasses.replace(a, share_path=a.share_path[:-1])
    other_leaf = dataclasses.replace(a, leaf=(a.leaf + 1) % info.layout.leaf_count)
    other_entry = dataclasses.replace(a, entry=(a.entry + 1) % s.lists[0].count)
    for forged, why in (
        (bad_block, r"bad block path|not proven"),
        (bad_path, r"bad block path|not proven"),
        (bad_share_path, "not proven"),
        (other_leaf, "share list"),
        (other_entry, "another entry"),
    ):
        with pytest.raises(LedgerError, match=why):
            s.deals.prove(node, deal, 0, [answers[0], forged, *answers[2:]])
    with pytest.raises(LedgerError, match="wrong number"):
        s.deals.prove(node, deal, 0, answers[:3])
    with pytest.raises(LedgerError, match="not a node"):
        s.deals.prove(OTHER, deal, 0, answers)
    s.deals.prove(node, deal, 0, answers)
    # Proving the same period twice is refused (and pays nothing more).
    with pytest.raises(LedgerError, match="already settled"):
        s.deals.prove(node, deal, 0, answers)
    assert s.deals.slot_of(deal, node.address).earned == PRICE


def test_no_proof_before_the_draw_or_after_the_window(ledger: Ledger) -> None:
    s = setup(ledger)
    deal = open_deal(s, terms(periods=2))
    join_all(s, deal)
    info = s.deals.deal(deal)
    from datagora.storage.errors import StorageError

    mine_to(ledger, info.seed_block(1) - 1)
    with pytest.raises(StorageError, match="no seed"):
        s.provers[0].prove(deal, 1)  # its seed block is not mined yet
    mine_to(ledger, info.window_end(0))
    with pytest.raises(LedgerError, match="window has closed"):
        s.deals.prove(NODES[0], deal, 0, s.provers[0].answers(deal, 0))


def test_owner_end_refunds_the_periods_not_started(ledger: Ledger) -> None:
    s = setup(ledger)
    token = ledger.market_token
    before = token.balance_of(OWNER.address)
    deal = open_deal(s, terms(periods=10, period_blocks=30))
    join_all(s, deal)
    with pytest.raises(LedgerError, match="not the deal's owner"):
        s.deals.end_deal(OTHER, deal)
    info = s.deals.deal(deal)
    mine_to(ledger, info.seed_block(1) + 1)
    s.provers[0].prove(deal, 1)
    s.deals.end_deal(OWNER, deal)  # during period 1: periods 2..9 refunded
    assert s.deals.deal(deal).end_period == 2
    assert token.balance_of(OWNER.address) == before - 2 * 3 * PRICE
    with pytest.raises(LedgerError, match="no future periods"):
        s.deals.end_deal(OWNER, deal)
    mine_to(ledger, info.window_end(1))
    with pytest.raises(LedgerError, match="does not cover"):
        s.deals.prove(NODES[0], deal, 2, [])


def test_only_the_controller_opens_a_deal_for_a_dataset(ledger: Ledger) -> None:
    s = setup(ledger)
    with pytest.raises(LedgerError, match="not controller"):
        open_deal(s, terms(), owner=OTHER)
    with pytest.raises(LedgerError, match="current version"):
        s.deals.open_deal(
            OWNER,
            s.dataset,
            7,
            [(NODES[0].address, s.lists[0].root, s.lists[0].count)],
            __import__("datagora.storage.deals", fromlist=["x"]).deal_layout(s.verified),
            terms(),
        )


def test_a_node_refuses_a_deal_that_names_shares_it_does_not_hold(ledger: Ledger) -> None:
    s = setup(ledger)
    t = terms()
    ledger.market_token.approve(OWNER, s.deals.address, t.price * t.periods * 2)
    from datagora.storage.deals import deal_layout
    from datagora.storage.errors import StorageError

    # The owner commits node 0 to node 1's shares: proving them would be impossible.
    deal, _ = s.deals.open_deal(
        OWNER,
        s.dataset,
        1,
        [
            (NODES[0].address, s.lists[1].root, s.lists[1].count),
            (NODES[1].address, s.lists[1].root, s.lists[1].count),
        ],
        deal_layout(s.verified),
        t,
    )
    with pytest.raises(StorageError, match="refusing to post collateral"):
        s.provers[0].join(deal)
    assert not s.deals.slot_of(deal, NODES[0].address).joined


# A node registry stand-in with exactly the interface of docs (shared interfaces):
# is_active(node, role), stake_of(node), slash(node, amount, to) by an approved slasher.
STUB_REGISTRY = """
# pragma version ~=0.4.3
active: public(HashMap[address, bool])
stake_of: public(HashMap[address, uint256])
received: public(HashMap[address, uint256])
slasher: public(address)

@external
def set_node(node: address, active: bool, stake: uint256):
    self.active[node] = active
    self.stake_of[node] = stake

@external
def set_slasher(slasher: address):
    self.slasher = slasher

@external
@view
def is_active(node: address, role: uint256) -> bool:
    return self.active[node] and role & 1 == 1

@external
def slash(node: address, amount: uint256, to: address):
    assert msg.sender == self.slasher, "not a slasher"
    self.stake_of[node] -= amount
    self.received[to] += amount
"""


def test_a_wired_registry_gates_joining_and_backs_slashes(ledger: Ledger) -> None:
    import vyper

    from datagora.ledger.compiler import compile_contract
    from datagora.storage.deals import DealProver
    from helpers import DEPLOYER

    out = vyper.compile_code(STUB_REGISTRY, output_formats=["abi", "bytecode"])
    chain = ledger.chain
    stub = chain.deploy(DEPLOYER, out["abi"], bytes.fromhex(out["bytecode"][2:]))
    compiled = compile_contract("StorageDeals")
    address = chain.deploy(
        DEPLOYER,
        compiled.abi,
        compiled.bytecode,
        ledger.market_token.address,
        ledger.data_nft.address,
        stub,
    )
    registry = chain.w3.eth.contract(address=stub, abi=out["abi"])  # type: ignore[call-overload]

    def call(fn: str, *args: object) -> None:
        data = registry.encode_abi(fn, args=list(args))
        chain.transact(DEPLOYER, {"to": stub, "data": data}, fn)

    s = setup(ledger)
    deals = StorageDeals(chain, address)
    s = dataclasses.replace(s, deals=deals)
    provers = [
        DealProver(deals, node, s.held[j].read, lambda _i: s.verified)
        for j, node in enumerate(NODES)
    ]
    call("set_slasher", address)
    call("set_node", NODES[0].address, True, 5 * SLASH)
    call("set_node", NODES[1].address, True, 0)
    call("set_node", NODES[2].address, False, 5 * SLASH)  # staked, but not active
    deal = open_deal(s, terms(periods=1, slash=SLASH, collateral=SLASH // 2))
    with pytest.raises(LedgerError, match="not an active storage node"):
        provers[2].join(deal)  # not in the registry
    provers[0].join(deal)
    provers[1].join(deal)
    info = deals.deal(deal)
    mine_to(ledger, info.window_end(0))
    token = ledger.market_token
    before = token.balance_of(OWNER.address)
    # Node 0 missed: half the slash from its deal collateral, half from its stake.
    deals.slash_missed(OTHER, deal, NODES[0].address, 0)
    assert token.balance_of(OWNER.address) == before + PRICE + SLASH // 2
    assert registry.functions.stake_of(NODES[0].address).call() == 5 * SLASH - SLASH // 2
    assert registry.functions.received(OWNER.address).call() == SLASH // 2
    # Node 1 has no stake left to take: only its collateral goes.
    deals.slash_missed(OTHER, deal, NODES[1].address, 0)
    assert registry.functions.received(OWNER.address).call() == SLASH // 2
    # Node 2 never joined: listing it gives the owner no claim on its stake.
    deals.slash_missed(OTHER, deal, NODES[2].address, 0)
    assert registry.functions.stake_of(NODES[2].address).call() == 5 * SLASH
    assert registry.functions.received(OWNER.address).call() == SLASH // 2
