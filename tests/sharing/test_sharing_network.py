"""Sharing over a real network: anvil, three proxy processes and the owner's agent (2-of-3).

Every refusal is checked for its precise error and for what the proxies answered;
the last tests scan every proxy's (and the agent's) files for the data key and a
plaintext marker.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import umbral_pre
import uvicorn
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sharing_helpers import Network, wait_until

from datagora.crypto.keys import Identity, PublicIdentity, export_public
from datagora.crypto.pre import WrappedKey, dataset_scope, make_kfrags, seal_kfrag, wrap_key
from datagora.ledger import ListKind
from datagora.ledger.errors import NotController
from datagora.ports import free_port
from datagora.sharing import (
    DenyListed,
    ExpiredOrder,
    ForgedFragment,
    GrantRevoked,
    NoKeyFragment,
    NoOrder,
    NotEnoughProxies,
    RequestDenied,
    delegate,
    fetch_data_key,
    fetch_data_key_report,
    write_policies,
)
from datagora.sharing.accesslog import verify_log
from datagora.sharing.wire import Domain, KfragDelivery, ReencryptBody
from datagora.testing.sharing import agent_delegations
from helpers import OWNER, fund, publish

pytestmark = pytest.mark.anvil

MARKER = b"DATAGORA-PLAINTEXT-MARKER-7f3c"


@dataclass
class Dataset:
    id: int
    version: int
    data_key: bytes
    wrapped: WrappedKey
    ciphertext: bytes  # MARKER rows encrypted with the data key (what storage would hold)


@dataclass
class World:
    net: Network
    owner: Identity
    owner_public: PublicIdentity
    auto: Dataset  # automatic policy
    other: Dataset  # automatic policy, a second dataset
    approval: Dataset  # approval policy
    keys_seen: list[bytes]


def _dataset(world_owner: Identity, net: Network, **publish_args: Any) -> Dataset:
    published = publish(net.ledger, **publish_args)
    version = net.ledger.data_nft.get_dataset(published.dataset).version
    scope = dataset_scope(published.dataset, version)
    data_key = os.urandom(32)
    wrapped = wrap_key(data_key, world_owner.delegating_public_key(scope), scope=scope)
    nonce = os.urandom(12)
    ciphertext = nonce + AESGCM(data_key).encrypt(nonce, MARKER + b" rows", None)
    return Dataset(published.dataset, version, data_key, wrapped, ciphertext)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # Two worker processes per proxy: every check below also covers workers sharing
    # one port, fragment store, nonce store and hash-chained access log.
    net = Network(tmp_path_factory.mktemp("sharing"), proxy_workers=2)
    try:
        owner = net.owner
        auto = _dataset(owner, net)
        other = _dataset(owner, net)
        approval = _dataset(owner, net)
        write_policies(net.agent.data_dir, "automatic", {approval.id: "approval"})
        net.start()
        owner_public = PublicIdentity.from_json(export_public(owner))
        yield World(net, owner, owner_public, auto, other, approval, [])
    finally:
        net.stop()


def consumer(world: World) -> Identity:
    """A fresh, funded account."""
    ident = Identity.generate()
    world.net.ledger.chain.fund(ident.address, 10**19)
    fund(world.net.ledger, ident.address)
    return ident


def ckey(world: World, who: Identity) -> bytes:
    """The consumer's wallet-derived key on this chain: what orders and requests carry."""
    return who.consumer_key(world.net.ledger.chain.chain_id).public_key


def order(world: World, who: Identity, ds: Dataset) -> None:
    ledger = world.net.ledger
    ledger.exchange.buy_and_order(
        who.account, ds.id, ledger.datatoken(ds.id), consumer_key=ckey(world, who)
    )


def deliver(
    world: World,
    signer: Identity,
    who: Identity,
    ds: Dataset,
    kfrag: bytes,
    proxy: int = 0,
    *,
    batch: bytes | None = None,
    delegating_key: bytes | None = None,
    verifying_key: bytes | None = None,
) -> KfragDelivery:
    """A delivery of `kfrag` sealed to and addressed at proxy number `proxy`."""
    ident = world.net.proxy_ids[proxy]
    return KfragDelivery.build(
        signer, Domain.of(world.net.ledger), proxy=ident.address,
        proxy_key=ident.umbral_public_key, verifying_key=verifying_key or signer.verifying_key,
        dataset=ds.id, version=ds.version, consumer=who.address, consumer_key=ckey(world, who),
        grant=0, threshold=2, shares=3, batch=batch or os.urandom(32), kfrag=kfrag,
        delegating_key=delegating_key or ds.wrapped.delegating_key,
    )  # fmt: skip


def put_kfrags(url: str, delivery: KfragDelivery | dict[str, Any]) -> httpx.Response:
    body = delivery.to_json() if isinstance(delivery, KfragDelivery) else delivery
    return httpx.put(f"{url}/kfrags", json=body, timeout=10, trust_env=False)


def fragment_body(world: World, who: Identity, ds: Dataset, **kw: Any) -> dict[str, Any]:
    return ReencryptBody.build(
        who, Domain.of(world.net.ledger), ds.id, ds.version, ds.wrapped.capsule, **kw
    ).to_json()


def fetch(
    world: World, who: Identity, ds: Dataset, proxies: list[str] | None = None, timeout: float = 30
) -> bytes:
    key = fetch_data_key(
        world.net.ledger, who, world.owner_public, ds.wrapped, ds.id, ds.version,
        proxies or world.net.proxy_urls, world.net.threshold, timeout=timeout,
    )  # fmt: skip
    world.keys_seen.append(key)
    return key


def decrypt(ds: Dataset, key: bytes) -> bytes:
    return AESGCM(key).decrypt(ds.ciphertext[:12], ds.ciphertext[12:], None)


def post_reencrypt(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/reencrypt", json=body, timeout=10, trust_env=False)


def ordered_and_delegated(world: World, ds: Dataset) -> Identity:
    who = consumer(world)
    order(world, who, ds)
    wait_until(lambda: world.net.delegated(ds.id, who.address), "the agent's delegation")
    return who


# ---------------------------------------------------------------- the happy path


def test_order_opens_the_key_with_one_proxy_down(world: World) -> None:
    who = ordered_and_delegated(world, world.auto)
    down = world.net.proxies[2]
    down.kill()
    try:
        report = fetch_data_key_report(
            world.net.ledger, who, world.owner_public, world.auto.wrapped, world.auto.id,
            world.auto.version, world.net.proxy_urls, world.net.threshold,
        )  # fmt: skip
    finally:
        down.start()
        down.wait_ready()
    world.keys_seen.append(report.data_key)
    assert report.data_key == world.auto.data_key
    assert decrypt(world.auto, report.data_key) == MARKER + b" rows"
    assert down.url in report.unreachable and down.url not in report.good
    # The restarted proxy kept its fragment (durable store) and serves it again.
    assert fetch(world, who, world.auto, [down.url, world.net.proxy_urls[0]]) == (
        world.auto.data_key
    )


def test_allow_list_and_direct_delegate(world: World) -> None:
    who = consumer(world)
    ledger = world.net.ledger
    ledger.access.set_list(OWNER, world.other.id, who.address, ListKind.ALLOW)
    with pytest.raises(NoKeyFragment):
        fetch(world, who, world.other)  # allowed, but nothing delegated yet
    result = delegate(
        ledger, world.owner, world.other.id, world.other.version, who.address,
        ckey(world, who), world.net.proxy_urls, world.net.threshold,
    )  # fmt: skip
    assert result.accepted == world.net.proxy_urls and not result.failed
    assert fetch(world, who, world.other) == world.other.data_key


def test_two_racing_delegations_still_open_the_key(world: World) -> None:
    """An agent and a CLI both delegate after a grant: the proxies hold two batches."""
    who = ordered_and_delegated(world, world.auto)  # batch 1, on every proxy
    # Batch 2 reaches only the first proxy; the third proxy is down. Mixing proxy 0's
    # newest fragment with proxy 1's would not open the key: batches keep them apart.
    url0 = world.net.proxy_urls[0]
    kfrag = make_kfrags(world.owner, ckey(world, who), 2, 3, scope=world.auto.wrapped.scope)
    answer = put_kfrags(url0, deliver(world, world.owner, who, world.auto, kfrag[0]))
    assert answer.status_code == 200, answer.text
    body = fragment_body(world, who, world.auto)
    assert len(post_reencrypt(url0, body).json()["cfrags"]) == 2
    assert fetch(world, who, world.auto, world.net.proxy_urls[:2]) == world.auto.data_key


def test_only_the_controller_can_delegate(world: World) -> None:
    who = consumer(world)
    stranger = Identity.from_private_key(bytes(world.net.proxy_ids[0].account.key))
    with pytest.raises(NotController):
        delegate(
            world.net.ledger, stranger, world.auto.id, world.auto.version, who.address,
            ckey(world, who), world.net.proxy_urls, world.net.threshold,
        )  # fmt: skip
    # A proxy refuses the same delivery sent around the client-side check.
    scope = world.auto.wrapped.scope
    kfrag = make_kfrags(stranger, ckey(world, who), 2, 3, scope=scope)[0]
    delivery = deliver(
        world, stranger, who, world.auto, kfrag,
        delegating_key=stranger.delegating_public_key(scope),
    )  # fmt: skip
    answer = put_kfrags(world.net.proxy_urls[0], delivery)
    assert answer.status_code == 403 and answer.json()["error"] == "not_controller"


def test_a_swapped_or_foreign_kfrag_is_refused(world: World) -> None:
    who = consumer(world)
    scope = world.auto.wrapped.scope
    url = world.net.proxy_urls[0]
    kfrag = make_kfrags(world.owner, ckey(world, who), 2, 3, scope=scope)[0]
    delivery = deliver(world, world.owner, who, world.auto, kfrag)
    other = make_kfrags(world.owner, ckey(world, who), 2, 3, scope=scope)[0]
    capsule, ciphertext = seal_kfrag(other, world.net.proxy_ids[0].umbral_public_key)
    swapped = {
        **delivery.to_json(), "kfrag_capsule": capsule.hex(), "kfrag_ciphertext": ciphertext.hex()
    }  # fmt: skip
    answer = put_kfrags(url, swapped)
    assert answer.status_code == 401 and answer.json()["error"] == "bad_signature"
    # A fragment made for someone else's key than the one signed for.
    foreign = make_kfrags(world.owner, Identity.generate().umbral_public_key, 2, 3, scope=scope)
    answer = put_kfrags(url, deliver(world, world.owner, who, world.auto, foreign[0]))
    assert answer.status_code == 422 and answer.json()["error"] == "bad_kfrag"


# ---------------------------------------------------------------- refusals by the ledger


def test_no_order(world: World) -> None:
    who = consumer(world)
    with pytest.raises(NoOrder, match="no order or grant") as info:
        fetch(world, who, world.auto)
    assert "3 of 3 proxies" in str(info.value)


def test_an_order_for_another_dataset(world: World) -> None:
    who = ordered_and_delegated(world, world.other)
    assert fetch(world, who, world.other) == world.other.data_key
    with pytest.raises(NoOrder, match=f"dataset {world.auto.id}"):
        fetch(world, who, world.auto)


def test_revoked_grant(world: World) -> None:
    who = consumer(world)
    ledger = world.net.ledger
    ds = world.approval
    request_id, _ = ledger.access.request(
        who.account, ds.id, "research", consumer_key=ckey(world, who)
    )
    ledger.access.grant(OWNER, request_id, ledger.chain.timestamp() + 86_400)
    wait_until(lambda: world.net.delegated(ds.id, who.address), "the agent's delegation")
    assert fetch(world, who, ds) == ds.data_key
    ledger.access.revoke(OWNER, request_id)
    with pytest.raises(GrantRevoked, match=f"revoked grant {request_id}"):
        fetch(world, who, ds)


def test_denied_request(world: World) -> None:
    who = consumer(world)
    ledger = world.net.ledger
    request_id, _ = ledger.access.request(
        who.account, world.approval.id, "research", consumer_key=ckey(world, who)
    )
    ledger.access.deny(OWNER, request_id, "not for this purpose")
    with pytest.raises(RequestDenied, match=f"denied request {request_id}"):
        fetch(world, who, world.approval)


def test_approval_policy_ignores_orders(world: World) -> None:
    who = consumer(world)
    order(world, who, world.approval)
    wait_until(world.net.agent_caught_up, "the agent to read the order")
    assert not world.net.delegated(world.approval.id, who.address)
    with pytest.raises(NoKeyFragment):
        fetch(world, who, world.approval)


def test_deny_listed_despite_an_order(world: World) -> None:
    who = ordered_and_delegated(world, world.other)
    world.net.ledger.access.set_list(OWNER, world.other.id, who.address, ListKind.DENY)
    with pytest.raises(DenyListed):
        fetch(world, who, world.other)


# ---------------------------------------------------------------- refusals of signatures


def test_another_accounts_signature(world: World) -> None:
    victim = ordered_and_delegated(world, world.auto)
    thief = consumer(world)
    body = fragment_body(world, thief, world.auto)
    body["request"]["message"]["consumer"] = victim.address  # claim to be the victim
    for url in world.net.proxy_urls:
        answer = post_reencrypt(url, body)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "bad_signature" and "cfrags" not in answer.json()


def test_a_repeated_request_is_answered_again_and_checked_again(world: World) -> None:
    """Fragment requests are idempotent: a proxy (or anyone) that sends a consumer's
    request to the others first starves nobody, and each answer is a fresh ledger check."""
    who = ordered_and_delegated(world, world.other)
    body = fragment_body(world, who, world.other)
    url = world.net.proxy_urls[1]
    first = post_reencrypt(url, body)
    assert first.status_code == 200 and len(first.json()["cfrags"]) == 1
    again = post_reencrypt(url, body)
    assert again.status_code == 200 and len(again.json()["cfrags"]) == 1
    world.net.ledger.access.set_list(OWNER, world.other.id, who.address, ListKind.DENY)
    try:
        third = post_reencrypt(url, body)
        assert third.status_code == 403 and third.json()["error"] == "deny_listed"
    finally:
        world.net.ledger.access.set_list(OWNER, world.other.id, who.address, ListKind.NONE)


def test_malformed_bodies(world: World) -> None:
    url = world.net.proxy_urls[0]
    too_big = b'{"pad": "' + b"x" * (64 * 1024) + b'"}'
    for raw in (b"not json", b"[]", b'{"format": "datagora.reencrypt-request.v1"}', too_big):
        answer = httpx.post(f"{url}/reencrypt", content=raw, timeout=10, trust_env=False)
        expected = (413, "too_large") if raw is too_big else (422, "malformed")
        assert (answer.status_code, answer.json()["error"]) == expected
        assert "\n" not in answer.json()["detail"]


# ---------------------------------------------------------------- proxies down or lying


def test_fewer_than_threshold_proxies(world: World) -> None:
    who = ordered_and_delegated(world, world.auto)
    down = world.net.proxies[:2]
    down[0].kill()  # one crashed, one unresponsive
    down[1].pause()
    try:
        with pytest.raises(NotEnoughProxies, match="only 1 of 3 proxies") as info:
            fetch(world, who, world.auto, timeout=1)
        assert not isinstance(info.value, ForgedFragment)
        assert "ConnectError" in str(info.value) and "ReadTimeout" in str(info.value)
    finally:
        down[1].resume()
        down[0].start()
        down[0].wait_ready()


def _liar(upstream: str, mode: str) -> FastAPI:
    """A proxy that relays to an honest one and returns a tampered or foreign fragment."""
    app = FastAPI()
    owner, stranger = Identity.generate(), Identity.generate()
    capsule, _ = umbral_pre.encrypt(owner.umbral_secret_key().public_key(), b"x" * 32)
    kfrag = umbral_pre.generate_kfrags(
        owner.umbral_secret_key(), stranger.umbral_secret_key().public_key(),
        owner.umbral_signer(), 1, 1, True, True,
    )[0]  # fmt: skip
    foreign = bytes(umbral_pre.reencrypt(capsule, kfrag))

    @app.post("/reencrypt")
    async def reencrypt(request: Request) -> JSONResponse:
        async with httpx.AsyncClient(trust_env=False) as client:
            honest = await client.post(f"{upstream}/reencrypt", content=await request.body())
        payload = honest.json()
        for answer in payload.get("cfrags", []):
            raw = bytearray(bytes.fromhex(answer["cfrag"]))
            raw[len(raw) // 2] ^= 0x01
            answer["cfrag"] = (bytes(raw) if mode == "tampered" else foreign).hex()
        return JSONResponse(payload, status_code=honest.status_code)

    return app


@pytest.fixture(params=["tampered", "foreign"])
def liar(world: World, request: pytest.FixtureRequest) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(_liar(world.net.proxy_urls[0], request.param), port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the lying proxy")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join()


def test_a_lying_proxy_is_detected(world: World, liar: str) -> None:
    who = ordered_and_delegated(world, world.auto)
    proxies = [liar, *world.net.proxy_urls[1:]]
    report = fetch_data_key_report(
        world.net.ledger, who, world.owner_public, world.auto.wrapped, world.auto.id,
        world.auto.version, proxies, world.net.threshold, wait_all=True,
    )  # fmt: skip
    world.keys_seen.append(report.data_key)
    assert report.data_key == world.auto.data_key
    assert list(report.bad) == [liar] and sorted(report.good) == sorted(proxies[1:])
    # With one honest proxy down, the liar's fragment cannot make up the threshold.
    world.net.proxies[2].pause()
    try:
        with pytest.raises(ForgedFragment, match=liar):
            fetch(world, who, world.auto, proxies, timeout=1)
    finally:
        world.net.proxies[2].resume()


# ---------------------------------------------------------------- agent restart, log, leaks


def test_agent_resumes_without_duplicates(world: World) -> None:
    net = world.net
    wait_until(net.agent_caught_up, "the agent to catch up")
    before = agent_delegations(net.agent.url)
    kfrags = [p.health()["kfrags"] for p in net.proxies]
    net.agent.stop()
    who = consumer(world)
    order(world, who, world.auto)  # while the agent is down
    net.agent.start()
    net.agent.wait_ready()
    wait_until(lambda: net.delegated(world.auto.id, who.address), "the delegation after restart")
    wait_until(net.agent_caught_up, "the agent to catch up")
    after = agent_delegations(net.agent.url)
    assert after[: len(before)] == before and len(after) == len(before) + 1
    assert [p.health()["kfrags"] for p in net.proxies] == [k + 1 for k in kfrags]
    assert fetch(world, who, world.auto) == world.auto.data_key


def test_access_logs_chain_and_match_their_anchors(world: World) -> None:
    for proxy, ident in zip(world.net.proxies, world.net.proxy_ids, strict=True):
        entries = wait_until(
            lambda p=proxy: p.health()["anchored_entries"] or None, "a first anchor"
        )
        anchor = world.net.ledger.access_log.latest(ident.address)
        assert anchor.entries >= entries
        text = httpx.get(f"{proxy.url}/log", trust_env=False).text
        lines = [json.loads(line) for line in text.splitlines()]
        count, _ = verify_log(lines)
        assert count >= anchor.entries
        _, digest = verify_log(lines[: anchor.entries])
        assert digest == anchor.digest
        outcomes = {(e["event"], e["outcome"], e["reason"]) for e in lines}
        assert ("reencrypt", "accepted", "") in outcomes
        assert ("reencrypt", "refused", "no_order") in outcomes
        assert ("delegation", "accepted", "") in outcomes


def test_a_new_version_is_delegated_to_entitled_consumers(world: World) -> None:
    ledger = world.net.ledger
    ds = world.other
    who = ordered_and_delegated(world, ds)
    outsider = consumer(world)
    ledger.data_nft.update(OWNER, ds.id, os.urandom(32), "https://example.org/v2.json")
    version = ledger.data_nft.get_dataset(ds.id).version
    assert version == ds.version + 1
    scope = dataset_scope(ds.id, version)
    new_key = os.urandom(32)
    new = Dataset(
        ds.id,
        version,
        new_key,
        wrap_key(new_key, world.owner.delegating_public_key(scope), scope=scope),
        b"",
    )
    wait_until(
        lambda: world.net.delegated(ds.id, who.address, version), "the new version's delegation"
    )
    assert fetch(world, who, new) == new_key
    # Someone with no order still gets nothing for the new version.
    with pytest.raises(NoOrder):
        fetch(world, outsider, new)
    world.keys_seen.append(new_key)


def test_expired_order(world: World) -> None:
    who = ordered_and_delegated(world, world.auto)
    assert fetch(world, who, world.auto) == world.auto.data_key
    world.net.ledger.chain.advance_time(86_400 + 1)
    with pytest.raises(ExpiredOrder, match="expired at"):
        fetch(world, who, world.auto)


def test_nothing_secret_reaches_a_proxy(world: World) -> None:
    """Runs last: every key fetched above, and the marker, are absent from every file."""
    ds = [world.auto, world.other, world.approval]
    secrets = {d.data_key for d in ds} | set(world.keys_seen)
    assert {d.data_key for d in ds if d.data_key in world.keys_seen} == {
        world.auto.data_key,
        world.other.data_key,
        world.approval.data_key,
    }
    needles = [MARKER, MARKER.hex().encode()]
    for key in secrets:
        needles += [key, key.hex().encode(), key.hex().upper().encode()]
    dirs = [p.data_dir for p in world.net.proxies] + [world.net.agent.data_dir]
    for p in world.net.proxies:
        p.stop()  # flush WAL files and logs into the directory
    scanned = 0
    for directory in dirs:
        for path in Path(directory).rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                scanned += 1
                for needle in needles:
                    assert needle not in content, f"{path} holds a secret"
    assert scanned >= 4 * len(dirs)
