"""A dataset's proxies and threshold, chosen on chain by its controller (ProxySets)."""

from __future__ import annotations

import pytest

from datagora.ledger import Ledger, Pricing, Role, dev_account
from datagora.ledger.errors import InvalidArgument, NotController
from helpers import OTHER, OWNER, fund, publish

PROXIES = [dev_account(5), dev_account(6), dev_account(7)]
STORAGE = dev_account(8)


def _register(ledger: Ledger) -> None:
    for i, node in enumerate(PROXIES):
        fund(ledger, node.address)
        ledger.registry.register(node, Role.PROXY, f"http://proxy:{i + 1}", 10**19, bytes([2]) * 33)
    fund(ledger, STORAGE.address)
    ledger.registry.register(STORAGE, Role.STORAGE, "http://storage:1", 10**19)


def test_the_controller_chooses_registered_proxies_and_a_threshold(ledger: Ledger) -> None:
    assert ledger.proxy_sets is not None
    sets = ledger.proxy_sets
    _register(ledger)
    dataset = publish(ledger, Pricing.NONE).dataset
    assert not sets.proxies_of(dataset).chosen
    addresses = [p.address for p in PROXIES]
    sets.set_proxies(OWNER, dataset, addresses, 2)
    chosen = sets.proxies_of(dataset)
    assert chosen.proxies == tuple(addresses) and chosen.threshold == 2
    sets.set_proxies(OWNER, dataset, [], 0)  # cleared
    assert not sets.proxies_of(dataset).chosen


def test_what_set_proxies_refuses(ledger: Ledger) -> None:
    """A stranger, threshold 1 of several, an unregistered, storage-only or departed
    node, a duplicate: each refused, and nothing changes."""
    assert ledger.proxy_sets is not None
    sets = ledger.proxy_sets
    _register(ledger)
    dataset = publish(ledger, Pricing.NONE).dataset
    a, b, c = (p.address for p in PROXIES)
    sets.set_proxies(OWNER, dataset, [a, b], 2)
    with pytest.raises(NotController):
        sets.set_proxies(OTHER, dataset, [a, b, c], 2)
    with pytest.raises(InvalidArgument, match="threshold 1"):
        sets.set_proxies(OWNER, dataset, [a, b], 1)
    with pytest.raises(InvalidArgument, match="between 1 and 2"):
        sets.set_proxies(OWNER, dataset, [a, b], 3)
    with pytest.raises(InvalidArgument, match="named once"):
        sets.set_proxies(OWNER, dataset, [a, a], 2)
    for outsider in (OTHER.address, STORAGE.address):
        with pytest.raises(InvalidArgument, match="active registered proxy"):
            sets.set_proxies(OWNER, dataset, [a, outsider], 2)
    # The contract itself refuses what the client checks (a client that skips them).
    with pytest.raises(InvalidArgument, match="threshold 1"):
        sets._transact(OWNER, "set_proxies", dataset, [a, b], 1)
    ledger.registry.leave(PROXIES[2])
    with pytest.raises(InvalidArgument, match="active registered proxy"):
        sets.set_proxies(OWNER, dataset, [a, c], 2)
    assert sets.proxies_of(dataset).proxies == (a, b)


def test_a_single_proxy_may_have_threshold_one(ledger: Ledger) -> None:
    assert ledger.proxy_sets is not None
    _register(ledger)
    dataset = publish(ledger, Pricing.NONE).dataset
    ledger.proxy_sets.set_proxies(OWNER, dataset, [PROXIES[0].address], 1)
    assert ledger.proxy_sets.proxies_of(dataset).threshold == 1
