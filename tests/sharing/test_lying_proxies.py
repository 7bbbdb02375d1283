"""Proxies that lie, replay and forward, on a real network (anvil, three proxy processes,
the owner's agent with an agent key of its own, 2-of-3), and the rules that stop them.

Each adversary is named: a proxy replaying the delivery it was given to the others, a
proxy forwarding a consumer's request to the others first, a proxy answering with
tampered or relayed fragments, a request signed for another deployment, threshold 1
with several proxies, and an agent key its owner revoked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sharing_helpers import PASSWORD, Network, wait_until

from datagora.crypto.eip712 import sign_request
from datagora.crypto.keys import Identity, PublicIdentity, export_public
from datagora.crypto.pre import WrappedKey, dataset_scope, make_kfrags, wrap_key
from datagora.errors import ConfigError
from datagora.market import Endpoints
from datagora.ports import free_port
from datagora.sharing import (
    DelegateRevoked,
    SharingError,
    delegate,
    fetch_data_key,
    fetch_data_key_report,
)
from datagora.sharing.requests import ZERO_ADDRESS, DelegationRequest
from datagora.sharing.wire import Domain, KfragDelivery, ReencryptBody
from helpers import OWNER, fund, publish

pytestmark = pytest.mark.anvil


@dataclass
class Dataset:
    id: int
    version: int
    data_key: bytes
    wrapped: WrappedKey


@dataclass
class World:
    net: Network
    owner: Identity
    owner_public: PublicIdentity
    ds: Dataset


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    net = Network(tmp_path_factory.mktemp("lying"))
    try:
        published = publish(net.ledger)
        version = net.ledger.data_nft.get_dataset(published.dataset).version
        scope = dataset_scope(published.dataset, version)
        key = os.urandom(32)
        wrapped = wrap_key(key, net.owner.delegating_public_key(scope), scope=scope)
        net.start()
        owner_public = PublicIdentity.from_json(export_public(net.owner))
        yield World(net, net.owner, owner_public, Dataset(published.dataset, version, key, wrapped))
    finally:
        net.stop()


def consumer(world: World) -> Identity:
    ident = Identity.generate()
    world.net.ledger.chain.fund(ident.address, 10**19)
    fund(world.net.ledger, ident.address)
    return ident


def ckey(world: World, who: Identity) -> bytes:
    return who.consumer_key(world.net.ledger.chain.chain_id).public_key


def ordered_and_delegated(world: World) -> Identity:
    who = consumer(world)
    ledger = world.net.ledger
    ledger.exchange.buy_and_order(
        who.account, world.ds.id, ledger.datatoken(world.ds.id), consumer_key=ckey(world, who)
    )
    wait_until(lambda: world.net.delegated(world.ds.id, who.address), "the agent's delegation")
    return who


def fetch(world: World, who: Identity, proxies: list[str] | None = None) -> bytes:
    return fetch_data_key(
        world.net.ledger, who, world.owner_public, world.ds.wrapped, world.ds.id,
        world.ds.version, proxies or world.net.proxy_urls, world.net.threshold, timeout=30,
    )  # fmt: skip


def agent_delivery(world: World, who: Identity, kfrag: bytes, proxy: int, batch: bytes) -> Any:
    """Exactly what the agent sends proxy number `proxy`: signed with the agent's key."""
    ident = world.net.proxy_ids[proxy]
    keys = world.owner.delegation_keys()
    return KfragDelivery.build(
        world.net.agent_id, Domain.of(world.net.ledger), proxy=ident.address,
        proxy_key=ident.umbral_public_key, verifying_key=keys.verifying_key,
        dataset=world.ds.id, version=world.ds.version, consumer=who.address,
        consumer_key=ckey(world, who), grant=0, threshold=2, shares=3, batch=batch,
        kfrag=kfrag, delegating_key=world.ds.wrapped.delegating_key,
    ).to_json()  # fmt: skip


def put(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(f"{url}/kfrags", json=body, timeout=10, trust_env=False)


def serve(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the adversary's server")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join()


# ---------------------------------------------------------------- a proxy replaying deliveries


def test_a_proxy_replaying_its_delivery_to_the_others_changes_nothing(world: World) -> None:
    """Proxy 0 got its fragment; it sends that very delivery to proxies 1 and 2, to make
    them hold its fragment instead of theirs (then all three would answer with one key
    fragment, and the key would never open)."""
    who = ordered_and_delegated(world)
    kfrags = make_kfrags(
        world.owner.delegation_keys(), ckey(world, who), 2, 3, scope=world.ds.wrapped.scope
    )
    batch = os.urandom(32)
    delivery = agent_delivery(world, who, kfrags[0], 0, batch)
    assert put(world.net.proxy_urls[0], delivery).status_code == 200
    for i, url in enumerate(world.net.proxy_urls[1:], start=1):
        answer = put(url, delivery)
        assert answer.status_code == 403 and answer.json()["error"] == "wrong_proxy"
        # Readdressing it breaks the signature.
        readdressed = {**delivery, "request": {**delivery["request"]}}
        readdressed["request"]["message"] = {
            **delivery["request"]["message"],
            "proxy": world.net.proxy_ids[i].address,
        }
        answer = put(url, readdressed)
        assert answer.status_code == 401 and answer.json()["error"] == "bad_signature"
    # Again to proxy 0 itself: a replay, refused; another fragment under the same batch
    # (signed and addressed properly) does not overwrite the first.
    answer = put(world.net.proxy_urls[0], delivery)
    assert answer.status_code == 401 and answer.json()["error"] == "replayed"
    other = agent_delivery(world, who, kfrags[1], 0, batch)
    answer = put(world.net.proxy_urls[0], other)
    assert answer.status_code == 409 and answer.json()["error"] == "batch_exists"
    # The consumer still opens the key, from any two proxies.
    for pair in ([0, 1], [1, 2], [0, 2]):
        assert fetch(world, who, [world.net.proxy_urls[i] for i in pair]) == world.ds.data_key


# ---------------------------------------------------------------- a proxy forwarding requests


def _forwarder(upstream: str, others: list[str]) -> FastAPI:
    """A proxy that first sends every request it gets to the other proxies."""
    app = FastAPI()

    @app.post("/reencrypt")
    async def reencrypt(request: Request) -> JSONResponse:
        raw = await request.body()
        async with httpx.AsyncClient(trust_env=False) as client:
            for url in others:
                await client.post(f"{url}/reencrypt", content=raw)
            honest = await client.post(f"{upstream}/reencrypt", content=raw)
        return JSONResponse(honest.json(), status_code=honest.status_code)

    return app


@pytest.fixture
def forwarder(world: World) -> Iterator[str]:
    urls = world.net.proxy_urls
    yield from serve(_forwarder(urls[0], urls[1:]))


def test_a_proxy_forwarding_a_request_first_starves_nobody(world: World, forwarder: str) -> None:
    who = ordered_and_delegated(world)
    proxies = [forwarder, *world.net.proxy_urls[1:]]
    report = fetch_data_key_report(
        world.net.ledger, who, world.owner_public, world.ds.wrapped, world.ds.id,
        world.ds.version, proxies, world.net.threshold, wait_all=True,
    )  # fmt: skip
    assert report.data_key == world.ds.data_key
    assert len(report.good) == 2 and set(report.good) <= set(proxies)
    assert not report.refused and not report.bad  # nobody answered "replayed"


# ---------------------------------------------------------------- a proxy returning bad fragments


def _liar(upstream: str, mode: str) -> FastAPI:
    """`tampered`: relays to an honest proxy and flips a bit of each fragment.
    `relayed`: answers with the fragment `upstream` gave, as if it were its own."""
    app = FastAPI()

    @app.post("/reencrypt")
    async def reencrypt(request: Request) -> JSONResponse:
        async with httpx.AsyncClient(trust_env=False) as client:
            honest = await client.post(f"{upstream}/reencrypt", content=await request.body())
        payload = honest.json()
        if mode == "tampered":
            for answer in payload.get("cfrags", []):
                raw = bytearray(bytes.fromhex(answer["cfrag"]))
                raw[len(raw) // 2] ^= 0x01
                answer["cfrag"] = bytes(raw).hex()
        return JSONResponse(payload, status_code=honest.status_code)

    return app


def _liar_fixture(mode: str, upstream: Callable[[World], str]) -> Any:
    @pytest.fixture
    def fixture(world: World) -> Iterator[str]:
        yield from serve(_liar(upstream(world), mode))

    return fixture


tamperer = _liar_fixture("tampered", lambda w: w.net.proxy_urls[0])
relayer = _liar_fixture("relayed", lambda w: w.net.proxy_urls[1])


def test_a_proxy_returning_bad_fragments_is_named(world: World, tamperer: str) -> None:
    who = ordered_and_delegated(world)
    proxies = [tamperer, *world.net.proxy_urls[1:]]
    report = fetch_data_key_report(
        world.net.ledger, who, world.owner_public, world.ds.wrapped, world.ds.id,
        world.ds.version, proxies, world.net.threshold, wait_all=True,
    )  # fmt: skip
    assert report.data_key == world.ds.data_key
    assert report.misbehaved == [tamperer]
    assert sorted(report.good) == sorted(world.net.proxy_urls[1:])
    # With an honest proxy away, the liar cannot make up the threshold: the error names it.
    with pytest.raises(SharingError, match=tamperer):
        fetch(world, who, [tamperer, world.net.proxy_urls[1]])


def test_a_proxy_relaying_anothers_fragment_adds_nothing(world: World, relayer: str) -> None:
    """The relayer answers with proxy 1's fragment; counted once, the key still opens
    from proxies 1 and 2, and one of the two answering with the same key fragment is
    reported (the consumer cannot tell which one relayed)."""
    who = ordered_and_delegated(world)
    proxies = [relayer, *world.net.proxy_urls[1:]]
    report = fetch_data_key_report(
        world.net.ledger, who, world.owner_public, world.ds.wrapped, world.ds.id,
        world.ds.version, proxies, world.net.threshold, wait_all=True,
    )  # fmt: skip
    assert report.data_key == world.ds.data_key
    assert len(report.misbehaved) == 1
    assert report.misbehaved[0] in (relayer, world.net.proxy_urls[1])
    assert "repeated" in report.bad[report.misbehaved[0]]
    # Only the relayer and proxy 1: one key fragment between them, not enough.
    with pytest.raises(SharingError, match="repeated"):
        fetch(world, who, [relayer, world.net.proxy_urls[1]])


# ---------------------------------------------------------------- threshold 1 of several


def test_threshold_one_with_three_proxies_is_refused(world: World) -> None:
    net = world.net
    who = consumer(world)
    with pytest.raises(SharingError, match="threshold 1 with 3 proxies"):
        delegate(
            net.ledger, world.owner, world.ds.id, world.ds.version, who.address,
            ckey(world, who), net.proxy_urls, 1,
        )  # fmt: skip
    with pytest.raises(SharingError, match="threshold 1 with 3 proxies"):
        fetch_data_key(
            net.ledger, who, world.owner_public, world.ds.wrapped, world.ds.id,
            world.ds.version, net.proxy_urls, 1,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="threshold 1 with 3 proxies"):
        Endpoints([], net.proxy_urls, 1)
    assert Endpoints([], net.proxy_urls).threshold == 2  # the SDK's default
    # `datagora node --roles agent`: one clear line, non-zero exit, nothing started.
    command = [
        sys.executable, "-m", "datagora", "node", "--roles", "agent", "--port",
        str(free_port()), "--data", str(net.base / "refused-agent"), "--rpc", net.anvil.url,
        "--deployment", str(net.deployment), "--keys", str(net.keys), "--account",
        net.agent_id.address, "--delegation", str(net.delegation_file), "--threshold", "1",
        *[a for u in net.proxy_urls for a in ("--proxy", u)],
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DATAGORA_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert done.returncode != 0
    assert "threshold 1 with 3 proxies" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # A proxy refuses a delivery claiming threshold 1 of 3 (altered after signing or not).
    kfrag = make_kfrags(world.owner, ckey(world, who), 2, 3, scope=world.ds.wrapped.scope)[0]
    body = agent_delivery(world, who, kfrag, 0, os.urandom(32))
    body["request"]["message"]["threshold"] = 1
    answer = put(net.proxy_urls[0], body)
    assert answer.status_code == 422 and "threshold" in answer.json()["detail"]


# ---------------------------------------------------------------- requests bound to a deployment


def test_a_request_signed_for_another_deployment_is_refused(world: World) -> None:
    who = ordered_and_delegated(world)
    ledger = world.net.ledger
    elsewhere = Domain(ledger.chain.chain_id, "0x" + "11" * 20)  # same chain, other contracts
    body = ReencryptBody.build(who, elsewhere, world.ds.id, world.ds.version,
                               world.ds.wrapped.capsule).to_json()  # fmt: skip
    for url in world.net.proxy_urls:
        answer = httpx.post(f"{url}/reencrypt", json=body, timeout=10, trust_env=False)
        assert answer.status_code == 401 and answer.json()["error"] == "bad_signature"
        assert "contract" in answer.json()["detail"]
    # Signed for another service of the same dataset: not this proxy's audience.
    other_service = ReencryptBody.build(
        who, Domain.of(ledger), world.ds.id, world.ds.version, world.ds.wrapped.capsule,
        service=1,
    ).to_json()  # fmt: skip
    answer = httpx.post(
        f"{world.net.proxy_urls[0]}/reencrypt", json=other_service, timeout=10, trust_env=False
    )
    assert answer.status_code == 403 and answer.json()["error"] == "wrong_service"
    # A delegation request to the agent, signed by the owner for another deployment.
    request = DelegationRequest(
        delegator=world.owner.address, proxy=ZERO_ADDRESS, consumer=who.address,
        consumer_key=ckey(world, who), dataset=world.ds.id, version=world.ds.version, grant=0,
        threshold=2, shares=3, batch=os.urandom(32), nonce=os.urandom(32),
        expires=ledger.chain.timestamp() + 60,
    )  # fmt: skip
    signed = sign_request(
        world.owner, request, elsewhere.chain_id, verifying_contract=elsewhere.verifying_contract
    )
    answer = httpx.post(
        f"{world.net.agent.url}/delegations", json=signed.to_json(), timeout=10, trust_env=False
    )
    assert answer.status_code == 401, answer.text


# ---------------------------------------------------------------- the agent's delegate key


def test_a_revoked_agent_key_stops_the_agent(world: World) -> None:
    net = world.net
    assert net.agent.health()["signer"] == net.agent_id.address  # not the owner's key
    assert net.agent.health()["owner"] == world.owner.address
    net.ledger.access.set_delegate(OWNER, net.agent_id.address, False)
    try:
        who = consumer(world)
        net.ledger.exchange.buy_and_order(
            who.account, world.ds.id, net.ledger.datatoken(world.ds.id),
            consumer_key=ckey(world, who),
        )  # fmt: skip
        wait_until(net.agent_caught_up, "the agent to read the order")
        assert not net.delegated(world.ds.id, who.address)
        # What the revoked key still signs, no proxy takes.
        kfrag = make_kfrags(world.owner, ckey(world, who), 2, 3, scope=world.ds.wrapped.scope)
        for i, url in enumerate(net.proxy_urls):
            answer = put(url, agent_delivery(world, who, kfrag[i], i, os.urandom(32)))
            assert answer.status_code == 403 and answer.json()["error"] == "not_controller"
        with pytest.raises(DelegateRevoked):
            delegate(
                net.ledger, net.agent_id, world.ds.id, world.ds.version, who.address,
                ckey(world, who), net.proxy_urls, 2, keys=world.owner.delegation_keys(),
            )  # fmt: skip
    finally:
        net.ledger.access.set_delegate(OWNER, net.agent_id.address, True)
    # Authorised again, it delegates again (the next order).
    again = ordered_and_delegated(world)
    assert fetch(world, again) == world.ds.data_key
