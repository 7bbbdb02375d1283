from datagora.ledger import Ledger
from helpers import BUYER, ON_EVERY_NODE, OWNER, fund, publish


@ON_EVERY_NODE
def test_publish_buy_and_order(ledger: Ledger) -> None:
    fund(ledger, BUYER.address)
    pub = publish(ledger)
    dt = ledger.datatoken(pub.dataset)
    order = ledger.exchange.buy_and_order(BUYER, pub.dataset, dt, 0, b"\x02" * 33)
    assert order.consumer == BUYER.address
    assert dt.has_valid_order(BUYER.address, 0)
    assert ledger.data_nft.controller(pub.dataset) == OWNER.address
