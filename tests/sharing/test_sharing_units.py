"""In-process parts of sharing: the access log's hash chain, the delivery commitment, and the
on-chain gate on the embedded chain (the anvil path is covered by the network tests)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from datagora.crypto.errors import BadFragment, NotEnoughFragments
from datagora.crypto.keys import Identity
from datagora.crypto.pre import (
    VerifiedCapsuleFrag,
    VerifiedKeyFrag,
    cfrag_kfrag_id,
    dataset_scope,
    make_kfrags,
    open_kfrag,
    reencrypt,
    seal_kfrag,
    unwrap_reencrypted,
    verify_cfrag,
    verify_kfrag,
    wrap_key,
)
from datagora.errors import DatagoraError
from datagora.ledger import DatasetState, Ledger, ListKind
from datagora.ledger.errors import ChainError
from datagora.ledger.views import CallCoalescer
from datagora.sharing.accesslog import AccessLogFile, verify_log
from datagora.sharing.errors import LogCorrupt
from datagora.sharing.gate import AccessGate
from datagora.sharing.kfrags import KfragRecord, KfragStore
from datagora.sharing.wire import Domain, KfragDelivery
from datagora.testing.sharing import Network
from helpers import BUYER, OWNER, fund, publish


def _entries(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_access_log_chains_survives_reopen_and_detects_tampering(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = AccessLogFile(path)
    for i in range(3):
        log.append(event="reencrypt", outcome="accepted", account=f"0x{i:040x}", reason="")
    head = log.sync()
    log.close()
    assert verify_log(_entries(path)) == head
    with path.open("ab") as f:
        f.write(b'{"torn": ')  # a crash in the middle of a write
    reopened = AccessLogFile(path)
    assert reopened.head == head
    reopened.append(event="reencrypt", outcome="refused", account="0x0", reason="no_order")
    reopened.close()
    entries = _entries(path)
    assert verify_log(entries)[0] == 4
    for tamper in (
        lambda e: e[1].update(outcome="refused"),
        lambda e: e.pop(1),
        lambda e: e.insert(0, e.pop(2)),
    ):
        copy = [dict(x) for x in entries]
        tamper(copy)
        with pytest.raises(LogCorrupt):
            verify_log(copy)
    path.write_text("\n".join(json.dumps(e) for e in entries[:1] + entries[2:]) + "\n")
    with pytest.raises(LogCorrupt):
        AccessLogFile(path)


def test_a_delivery_is_sealed_to_its_proxy_and_commits_to_it() -> None:
    owner, consumer = Identity.generate(), Identity.generate()
    proxy, other_proxy = Identity.generate(), Identity.generate()
    scope = dataset_scope(1, 1)
    kfrags = make_kfrags(owner, consumer.umbral_public_key, 2, 2, scope=scope)
    domain = Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
    delivery = KfragDelivery.build(
        owner, domain, proxy=proxy.address, proxy_key=proxy.umbral_public_key,
        verifying_key=owner.verifying_key, dataset=1, version=1, consumer=consumer.address,
        consumer_key=consumer.umbral_public_key, grant=0, threshold=2, shares=2,
        batch=bytes(32), kfrag=kfrags[0], delegating_key=owner.delegating_public_key(scope),
    )  # fmt: skip
    wire = json.dumps(delivery.to_json())
    assert kfrags[0].hex() not in wire  # the fragment never travels in the clear
    parsed = KfragDelivery.from_json(json.loads(wire))
    assert parsed.commitment_holds() and parsed.signed.request.proxy == proxy.address
    assert open_kfrag(proxy.umbral_secret_key(), parsed.capsule, parsed.ciphertext) == kfrags[0]
    with pytest.raises(BadFragment):  # replayed to another proxy: it cannot open it
        open_kfrag(other_proxy.umbral_secret_key(), parsed.capsule, parsed.ciphertext)
    resealed = seal_kfrag(kfrags[1], proxy.umbral_public_key)
    swapped = {
        **delivery.to_json(),
        "kfrag_capsule": resealed[0].hex(),
        "kfrag_ciphertext": resealed[1].hex(),
    }
    assert not KfragDelivery.from_json(swapped).commitment_holds()


def test_the_first_delivery_of_a_batch_stays(tmp_path: Path) -> None:
    owner, consumer = Identity.generate(), Identity.generate()
    scope = dataset_scope(3, 1)
    first, second = make_kfrags(owner, consumer.umbral_public_key, 2, 2, scope=scope)
    store = KfragStore(tmp_path / "kfrags.sqlite")

    def record(kfrag: bytes, batch: bytes) -> KfragRecord:
        return KfragRecord(
            3, 1, consumer.address, consumer.umbral_public_key, kfrag, owner.verifying_key,
            owner.delegating_public_key(scope), owner.address, 0, 2, 2, batch, 0,
        )  # fmt: skip

    def verified(kfrag: bytes) -> VerifiedKeyFrag:
        return verify_kfrag(
            kfrag, owner.verifying_key, owner.delegating_public_key(scope),
            consumer.umbral_public_key,
        )  # fmt: skip

    batch = b"\x01" * 32
    assert store.put(record(first, batch), verified(first))
    assert store.put(record(first, batch), verified(first))  # a retry: same fragment, fine
    assert not store.put(record(second, batch), verified(second))  # another: refused
    assert [r.kfrag for r in store.get(3, 1, consumer.address)] == [first]
    assert store.put(record(second, b"\x02" * 32), verified(second))  # a new batch is kept
    assert len(store.get(3, 1, consumer.address)) == 2
    store.close()


def test_capsule_fragments_of_one_key_fragment_share_its_id() -> None:
    owner, consumer = Identity.generate(), Identity.generate()
    scope = dataset_scope(5, 1)
    wrapped = wrap_key(b"k" * 32, owner.delegating_public_key(scope), scope=scope)
    receiving = consumer.consumer_key(31337)
    kfrags = make_kfrags(owner, receiving.public_key, 2, 3, scope=scope)
    dk = owner.delegating_public_key(scope)
    verified = [verify_kfrag(k, owner.verifying_key, dk, receiving.public_key) for k in kfrags]

    def cfrag(i: int) -> VerifiedCapsuleFrag:
        raw = reencrypt(verified[i], wrapped.capsule)
        return verify_cfrag(raw, wrapped.capsule, owner.verifying_key, dk, receiving.public_key)

    a, a_again, b = cfrag(0), cfrag(0), cfrag(1)
    assert bytes(a) != bytes(a_again)  # re-encryption is randomised...
    assert cfrag_kfrag_id(a) == cfrag_kfrag_id(a_again) != cfrag_kfrag_id(b)  # ...the id is not
    with pytest.raises(NotEnoughFragments):
        unwrap_reencrypted(receiving, dk, wrapped, [a, a_again], threshold=2)
    assert unwrap_reencrypted(receiving, dk, wrapped, [a, b], threshold=2) == b"k" * 32


def test_gate_on_the_embedded_chain(embedded_ledger: Ledger) -> None:
    ledger = embedded_ledger
    gate = AccessGate(ledger)
    ds = publish(ledger).dataset
    assert gate.check(ds, BUYER.address).code == "no_order"
    assert gate.check(ds + 100, BUYER.address).detail == f"dataset {ds + 100} does not exist"
    fund(ledger, BUYER.address)
    ledger.exchange.buy_and_order(BUYER, ds, ledger.datatoken(ds))
    assert gate.check(ds, BUYER.address).allowed
    ledger.access.set_list(OWNER, ds, BUYER.address, ListKind.DENY)
    assert gate.check(ds, BUYER.address).code == "deny_listed"
    ledger.access.set_list(OWNER, ds, BUYER.address, ListKind.NONE)
    # A disabled dataset serves no order, and the refusal says why (not "expired").
    ledger.data_nft.set_state(OWNER, ds, DatasetState.DISABLED)
    refused = gate.check(ds, BUYER.address)
    assert (refused.code, refused.detail) == ("dataset_inactive", f"dataset {ds} is disabled")
    ledger.data_nft.set_state(OWNER, ds, DatasetState.ACTIVE)
    assert gate.check(ds, BUYER.address).allowed
    ledger.chain.advance_time(86_400 + 1)
    assert gate.check(ds, BUYER.address).code == "order_expired"


@pytest.mark.anvil
def test_concurrent_async_checks_share_batches_and_see_each_change(_anvil_ledger: Ledger) -> None:
    ledger = _anvil_ledger
    snapshot = ledger.chain.snapshot()
    try:
        gate = AccessGate(ledger)
        assert isinstance(gate.views, CallCoalescer)
        ds = publish(ledger).dataset
        fund(ledger, BUYER.address)
        ledger.exchange.buy_and_order(BUYER, ds, ledger.datatoken(ds))

        async def many() -> list[str]:
            checks = [gate.check_async(ds, who.address) for who in [BUYER, OWNER] * 20]
            return [d.code or "allowed" for d in await asyncio.gather(*checks)]

        # The deployment's ViewBatch reads every view of a batch in one eth_call.
        assert gate.views.view_batch == ledger.deployment.contracts["ViewBatch"]
        assert asyncio.run(many()) == ["allowed", "no_order"] * 20
        assert gate.views.groups == 40 and gate.views.batches < 40
        # Without it (a deployment recorded before ViewBatch), call by call: same answers.
        batched = gate.views
        gate.views = ledger.chain.view_batcher(None)
        assert asyncio.run(many()) == ["allowed", "no_order"] * 20
        gate.views = batched
        # A change on chain is seen by the very next check, coalesced or not.
        ledger.access.set_list(OWNER, ds, BUYER.address, ListKind.DENY)
        assert set(asyncio.run(many())[::2]) == {"deny_listed"}
        # An unreachable chain fails every waiting check, with ChainError.
        gate.views = CallCoalescer("http://127.0.0.1:9")
        with pytest.raises(ChainError):
            asyncio.run(many())
    finally:
        ledger.chain.revert(snapshot)


_APPENDER = """
import sys
from pathlib import Path
from datagora.sharing.accesslog import AccessLogFile
log = AccessLogFile(Path(sys.argv[1]))
for i in range(int(sys.argv[2])):
    log.append(event="reencrypt", outcome="accepted", account=sys.argv[3], reason=str(i))
log.close()
"""


def test_processes_sharing_one_access_log_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    here = AccessLogFile(path)
    here.append(event="reencrypt", outcome="accepted", account="0xhere", reason="first")
    workers = [
        subprocess.Popen([sys.executable, "-c", _APPENDER, str(path), "150", f"0x{w}"])
        for w in range(3)
    ]
    for _ in range(50):
        here.append(event="reencrypt", outcome="refused", account="0xhere", reason="interleaved")
    assert [w.wait(timeout=60) for w in workers] == [0, 0, 0]
    assert here.head[0] == 1 + 50 + 3 * 150  # it took in the others' entries
    entries = _entries(path)
    assert verify_log(entries) == here.head == here.sync()
    # A worker killed mid-line leaves a torn line: the next append cuts it off.
    with path.open("ab") as f:
        f.write(b'{"format": "datagora.acc')
    seq, _ = here.append(event="reencrypt", outcome="accepted", account="0xhere", reason="last")
    assert seq == 502 and verify_log(_entries(path))[0] == 502
    here.close()


def test_fragment_reads_see_what_another_process_stored(tmp_path: Path) -> None:
    owner, consumer = Identity.generate(), Identity.generate()
    scope = dataset_scope(7, 1)
    kfrag = make_kfrags(owner, consumer.umbral_public_key, 1, 1, scope=scope)[0]
    verified = verify_kfrag(
        kfrag,
        owner.verifying_key,
        owner.delegating_public_key(scope),
        consumer.umbral_public_key,
    )
    reader, writer = KfragStore(tmp_path / "k.sqlite"), KfragStore(tmp_path / "k.sqlite")
    assert reader.get(7, 1, consumer.address) == []  # remembered as empty...
    record = KfragRecord(
        7, 1, consumer.address, consumer.umbral_public_key, bytes(kfrag), owner.verifying_key,
        owner.delegating_public_key(scope), owner.address, 0, 1, 1, b"\x01" * 32, 0,
    )  # fmt: skip
    writer.put(record, verified)
    (got,) = reader.get(7, 1, consumer.address)  # ...until the file changes
    assert got.kfrag == record.kfrag
    reader.close()
    writer.close()


def test_a_network_refuses_worker_counts_that_do_not_match_its_proxies(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 worker counts for 3 proxies"):
        Network(tmp_path, proxies=3, proxy_workers=[2, 1])
    assert list(tmp_path.iterdir()) == []


def test_an_owner_authorises_and_revokes_agent_keys(embedded_ledger: Ledger) -> None:
    access = embedded_ledger.access
    agent = Identity.generate().address
    assert not access.is_delegate(OWNER.address, agent)
    access.set_delegate(OWNER, agent, True)
    assert access.is_delegate(OWNER.address, agent)
    assert not access.is_delegate(BUYER.address, agent)  # one owner's agent, not another's
    events = [e for e in embedded_ledger.events() if e.name == "DelegateSet"]
    assert (events[-1]["owner"], events[-1]["delegate"], events[-1]["allowed"]) == (
        OWNER.address,
        agent,
        True,
    )
    access.set_delegate(OWNER, agent, False)
    assert not access.is_delegate(OWNER.address, agent)
    for bad in ("0x" + "00" * 20, OWNER.address):
        with pytest.raises(DatagoraError):
            access.set_delegate(OWNER, bad, True)
