"""The proxy and the agent fuzzed from their own OpenAPI schemas (schemathesis, a few
cases per operation), served over loopback on the embedded chain: no 5xx, no hang,
every status documented and every refusal explained; a refused request stores no
fragment and logs nothing as accepted. Then again *authenticated*: a schemathesis
hook signs each fuzzed request with a real key (the consumer's for ``POST
/reencrypt``, the owner's for ``PUT /kfrags`` and the agent's ``POST
/delegations``), so the fuzzing reaches the ledger, the fragment store and the
re-encryption behind the signature checks."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from datagora.crypto.eip712 import new_nonce, sign_request
from datagora.crypto.pre import dataset_scope, wrap_key
from datagora.ledger import Ledger
from datagora.node.apps import agent_app, proxy_app
from datagora.node.connect import dev_identity
from datagora.node.inprocess import ThreadServer
from datagora.sharing.agent import delegate
from datagora.sharing.requests import ZERO_ADDRESS, DelegationRequest, FragmentRequest
from datagora.sharing.wire import Domain, delivery_nonce
from datagora.testing.sharing import agent_delegations
from helpers import fund, publish
from schemafuzz import EXAMPLES, fuzz

OWNER, CONSUMER, PROXY = dev_identity(1), dev_identity(2), dev_identity(7)


class Proxy:
    """A served proxy holding one fragment for CONSUMER, who ordered the dataset."""

    def __init__(self, ledger: Ledger, data: Path) -> None:
        self.server = ThreadServer(lambda: proxy_app(ledger, PROXY, data), "proxy").start()
        self.url = self.server.url
        self.domain = Domain.of(ledger)
        self.dataset = publish(ledger, owner=OWNER.account).dataset
        fund(ledger, CONSUMER.address)
        ledger.exchange.buy_and_order(
            CONSUMER.account, self.dataset, ledger.datatoken(self.dataset),
            consumer_key=CONSUMER.umbral_public_key,
        )  # fmt: skip
        delegate(
            ledger, OWNER, self.dataset, 1, CONSUMER.address, CONSUMER.umbral_public_key,
            [self.url], 1,
        )  # fmt: skip
        scope = dataset_scope(self.dataset, 1)
        self.capsule = wrap_key(
            os.urandom(32), OWNER.delegating_public_key(scope), scope=scope
        ).capsule

    def state(self) -> tuple[int, list[dict[str, Any]]]:
        kfrags = self.server.app.state.proxy.kfrags.count()  # type: ignore[union-attr]
        log = [json.loads(line) for line in httpx.get(f"{self.url}/log").text.splitlines()]
        return kfrags, log


@pytest.fixture
def proxy(embedded_ledger: Ledger, tmp_path: Path) -> Iterator[Proxy]:
    served = Proxy(embedded_ledger, tmp_path / "proxy")
    try:
        yield served
    finally:
        served.server.stop()


def refusals_change_nothing(read: Any) -> tuple[Any, dict[int, int]]:
    """An `after_each` check: after a refusal (4xx) the proxy holds the same fragments
    and its log grew by refusals only; also counts the statuses seen."""
    last = [read()]
    statuses: dict[int, int] = {}

    def check(case: Any, response: Any) -> None:
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if case.method == "GET":
            return
        (kfrags, log), (was_kfrags, was_log) = read(), last[0]
        if response.status_code >= 400:
            assert kfrags == was_kfrags, (case.path, response.status_code)
            assert log[: len(was_log)] == was_log, "the access log was rewritten"
            added = [e["outcome"] for e in log[len(was_log) :]]
            assert set(added) <= {"refused"}, (case.path, response.status_code, added)
        last[0] = (kfrags, log)

    return check, statuses


def _expires() -> int:
    return int(time.time()) + 120


def test_the_proxy_survives_fuzzing_from_its_schema(proxy: Proxy) -> None:
    before = proxy.state()
    check, _ = refusals_change_nothing(proxy.state)
    report = fuzz(proxy.url, after_each=check)
    assert proxy.state()[0] == before[0]
    print(
        f"proxy: {len(report.operations)} operations, {report.examples} examples {report.seconds}"
    )
    assert not report.failures, "\n\n".join(report.failures)
    assert len(report.operations) >= 5, report.operations
    assert report.examples >= EXAMPLES * len(report.operations)


def signing_for_the_proxy(proxy: Proxy) -> Any:
    """The `sign` hook: POST /reencrypt signed by CONSUMER (every other case for the
    dataset, version and capsule it holds a fragment for, the rest as fuzzed), PUT
    /kfrags signed by OWNER, addressed to this proxy, its nonce committing to the
    fuzzed sealed fragment. Cases whose fields no request could carry stay unsigned."""
    turn = itertools.count()

    def sign(case: Any) -> Any:
        body = case.body
        if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
            return case
        m = body["request"].get("message", {})
        n = next(turn)
        try:
            if case.path == "/reencrypt":
                if n % 2 == 0:
                    m["dataset"], m["version"] = str(proxy.dataset), 1
                    body["capsule"] = proxy.capsule.hex()
                request: Any = FragmentRequest(
                    consumer=CONSUMER.address, dataset=int(m["dataset"]), version=m["version"],
                    service=0 if n % 5 else m["service"],
                    capsule=hashlib.sha256(bytes.fromhex(body["capsule"])).digest(),
                    nonce=new_nonce(), expires=_expires(),
                )  # fmt: skip
                signer = CONSUMER
            elif case.path == "/kfrags":
                keys = [bytes.fromhex(body[k]) for k in ("kfrag_capsule", "kfrag_ciphertext")]
                vk, dk = bytes.fromhex(body["verifying_key"]), bytes.fromhex(body["delegating_key"])
                nonce = delivery_nonce(bytes.fromhex(body["salt"]), *keys, vk, dk)
                ckey = bytes.fromhex(m["consumerKey"][2:])
                request = DelegationRequest(
                    delegator=OWNER.address, proxy=PROXY.address, consumer=m["consumer"],
                    consumer_key=ckey if len(ckey) == 33 else CONSUMER.umbral_public_key,
                    dataset=int(m["dataset"]) if n % 2 else proxy.dataset,
                    version=m["version"], grant=int(m["grant"]), threshold=1, shares=1,
                    batch=bytes.fromhex(m["batch"][2:]), nonce=nonce, expires=_expires(),
                )  # fmt: skip
                signer = OWNER
            else:
                return case
        except Exception:
            return case
        body["request"] = sign_request(
            signer, request, proxy.domain.chain_id,
            verifying_contract=proxy.domain.verifying_contract,
        ).to_json()  # fmt: skip
        return case

    return sign


def test_the_proxy_survives_authenticated_fuzzing(proxy: Proxy) -> None:
    before = proxy.state()
    check, statuses = refusals_change_nothing(proxy.state)
    report = fuzz(proxy.url, after_each=check, sign=signing_for_the_proxy(proxy))
    assert proxy.state()[0] == before[0]
    print(
        f"proxy (signed): {len(report.operations)} operations, {report.examples} examples, "
        f"statuses {dict(sorted(statuses.items()))}"
    )
    assert not report.failures, "\n\n".join(report.failures)
    # Past the signatures: re-encryptions served (200), the ledger refusing (403) and
    # fragments that do not open (422 bad_kfrag) are all in the access log.
    reasons = {(e["event"], e["outcome"], e["reason"]) for e in proxy.state()[1]}
    assert ("reencrypt", "accepted", "") in reasons, reasons
    assert any(e == "reencrypt" and o == "refused" for e, o, _ in reasons), reasons
    assert ("delegation", "refused", "bad_kfrag") in reasons, reasons
    assert statuses.get(200, 0) >= 1


def _agent(ledger: Ledger, tmp_path: Path) -> ThreadServer:
    return ThreadServer(
        lambda: agent_app(ledger, OWNER, ["http://127.0.0.1:9"], 1, tmp_path / "agent", 3600.0),
        "agent",
    ).start()


def signing_for_the_agent(domain: Domain, dataset: int) -> Any:
    """The `sign` hook for POST /delegations: a DelegationRequest signed by the agent's
    owner, to the zero address, for one proxy (half the time for the owner's dataset)."""
    turn = itertools.count()

    def sign(case: Any) -> Any:
        body = case.body
        if case.path != "/delegations" or not isinstance(body, dict):
            return case
        m = body.get("message", {})
        try:
            ckey = bytes.fromhex(m["consumerKey"][2:])
            request = DelegationRequest(
                delegator=OWNER.address, proxy=ZERO_ADDRESS, consumer=m["consumer"],
                consumer_key=ckey if len(ckey) == 33 else CONSUMER.umbral_public_key,
                dataset=int(m["dataset"]) if next(turn) % 2 else dataset,
                version=m["version"], grant=int(m["grant"]), threshold=1, shares=1,
                batch=bytes.fromhex(m["batch"][2:]), nonce=new_nonce(), expires=_expires(),
            )  # fmt: skip
        except Exception:
            return case
        case.body = sign_request(
            OWNER, request, domain.chain_id, verifying_contract=domain.verifying_contract
        ).to_json()
        return case

    return sign


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_the_agent_survives_fuzzing_from_its_schema(
    embedded_ledger: Ledger, tmp_path: Path, signed: bool
) -> None:
    dataset = publish(embedded_ledger, owner=OWNER.account).dataset
    server = _agent(embedded_ledger, tmp_path)
    url = server.url
    statuses: dict[int, int] = {}
    try:

        def state() -> Any:
            return agent_delegations(url)

        last = [state()]

        def refused_changes_nothing(case: Any, response: Any) -> None:
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if case.method == "POST":
                now = state()
                if response.status_code >= 400:
                    assert now == last[0], (case.path, response.status_code)
                last[0] = now

        sign = signing_for_the_agent(Domain.of(embedded_ledger), dataset) if signed else None
        report = fuzz(url, after_each=refused_changes_nothing, sign=sign)
    finally:
        server.stop()
    print(
        f"agent{' (signed)' if signed else ''}: {len(report.operations)} operations, "
        f"{report.examples} examples, statuses {dict(sorted(statuses.items()))}"
    )
    assert not report.failures, "\n\n".join(report.failures)
    assert len(report.operations) >= 3, report.operations
    if signed:  # past the signature: the owner's datasets and the proxies were reached
        assert statuses.get(403, 0) + statuses.get(422, 0) + statuses.get(502, 0) >= 1
