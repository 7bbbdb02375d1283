"""The consumer's side: ask the proxies for capsule fragments, verify them, open the data key.

One signed ``FragmentRequest`` goes to every proxy at once (proxies answer it
idempotently); each capsule fragment is verified against the owner's verifying key,
the wrapped key's delegating key and the consumer's key before it is used, and a
proxy that returns a bad one is reported. A proxy answers with one capsule fragment
per *batch* of key fragments it holds for the consumer (an owner may have delegated
more than once; fragments of different batches do not combine). Within a batch,
fragments are counted by the key fragment they come from: a proxy that returns a
fragment of a key fragment another proxy already answered with (it relayed the
other's answer, or holds a replayed delivery) adds nothing and is reported. Once
``threshold`` distinct fragments of one batch are in, they are combined; if a
combination does not open the key, the others are tried, then more proxies are
awaited, until the key opens or every proxy has answered.

The receiving key is the consumer's wallet-derived :class:`ConsumerKey`
(``docs/sharing.md``): the one its orders and requests carry.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from datagora.crypto.errors import BadFragment, NotEnoughFragments, UnwrapFailed
from datagora.crypto.keys import ConsumerKey, Identity, PublicIdentity
from datagora.crypto.pre import (
    VerifiedCapsuleFrag,
    WrappedKey,
    cfrag_kfrag_id,
    dataset_scope,
    unwrap_reencrypted,
    verify_cfrag,
)
from datagora.ledger import Ledger
from datagora.ledger.base import ZERO_ADDRESS
from datagora.sharing.answers import Evidence, answer_digest, recover_answer
from datagora.sharing.errors import (
    REFUSALS,
    AccessRefused,
    ForgedFragment,
    NoKeyFragment,
    NotEnoughProxies,
    SharingError,
    SignatureRefused,
)
from datagora.sharing.gate import DEFAULT_SERVICE_ID
from datagora.sharing.requests import check_threshold
from datagora.sharing.wire import Domain, ReencryptBody
from datagora.tls import verify_context

__all__ = ["FetchReport", "fetch_data_key", "fetch_data_key_report", "report_fault"]

_log = logging.getLogger(__name__)
DEFAULT_TIMEOUT: Final = 10.0
_MAX_BATCHES: Final = 16
_MAX_COMBINATIONS: Final = 64
"""Combinations of one batch's fragments tried before giving up on it."""
# When too few fragments come back, the most telling refusal is raised first.
_PRIORITY: Final = (
    "dataset_inactive",
    "deny_listed",
    "condition_unreadable",
    "condition_failed",
    "grant_revoked",
    "request_denied",
    "order_expired",
    "grant_expired",
    "request_pending",
    "no_order",
    "bad_signature",
    "expired_signature",
    "replayed",
    "no_kfrag",
)


@dataclass(frozen=True, slots=True)
class _Outcome:
    proxy: str
    cfrags: dict[bytes, VerifiedCapsuleFrag] = field(default_factory=dict)
    bad: str = ""
    code: str = ""
    detail: str = ""
    # The bad fragment and the proxy's signature over it, if it signed one.
    bad_answer: tuple[bytes, bytes] | None = None


@dataclass(frozen=True)
class FetchReport:
    """What a key fetch found: the key, and which proxies helped, refused, lied or were down.

    ``bad`` names every proxy that misbehaved: a fragment that does not verify, or one
    repeating a key fragment another proxy answered with first.
    """

    data_key: bytes = field(repr=False)
    good: list[str]
    bad: dict[str, str]
    refused: dict[str, str]
    unreachable: dict[str, str]
    evidence: dict[str, Evidence] = field(default_factory=dict)
    """Per misbehaving proxy that signed its bad fragment: what ``ProxyFaults.report``
    takes (:func:`report_fault`)."""

    @property
    def misbehaved(self) -> list[str]:
        """The proxies that returned bad or repeated fragments."""
        return sorted(self.bad)


def _ask(
    client: httpx.Client,
    proxy: str,
    body: dict[str, Any],
    wrapped: WrappedKey,
    verifying_key: bytes,
    consumer_key: bytes,
) -> _Outcome:
    try:
        response = client.post(f"{proxy.rstrip('/')}/reencrypt", json=body)
    except httpx.HTTPError as exc:
        return _Outcome(proxy, code="unreachable", detail=type(exc).__name__)
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return _Outcome(proxy, code="unreachable", detail=f"HTTP {response.status_code}, not JSON")
    if response.status_code != 200:
        code = payload.get("error")
        detail = payload.get("detail")
        if not isinstance(code, str) or not isinstance(detail, str):
            return _Outcome(proxy, code="unreachable", detail=f"HTTP {response.status_code}")
        return _Outcome(proxy, code=code, detail=detail[:300])
    answers = payload.get("cfrags")
    if not isinstance(answers, list) or not 0 < len(answers) <= _MAX_BATCHES:
        return _Outcome(proxy, bad="the answer holds no list of capsule fragments")
    cfrags: dict[bytes, VerifiedCapsuleFrag] = {}
    for answer in answers:
        try:
            batch = bytes.fromhex(answer["batch"])
            raw = bytes.fromhex(answer["cfrag"])
        except (KeyError, TypeError, ValueError):
            return _Outcome(proxy, bad="the answer holds a malformed capsule fragment")
        try:
            cfrags[batch] = verify_cfrag(
                raw, wrapped.capsule, verifying_key, wrapped.delegating_key, consumer_key
            )
        except BadFragment as exc:
            signature = answer.get("signature")
            signed = None
            if isinstance(signature, str) and len(signature) == 130:
                with contextlib.suppress(ValueError):
                    signed = (raw, bytes.fromhex(signature))
            return _Outcome(proxy, bad=str(exc), bad_answer=signed)
    return _Outcome(proxy, cfrags=cfrags)


def fetch_data_key_report(
    ledger: Ledger,
    consumer: Identity,
    owner_public: PublicIdentity,
    wrapped: WrappedKey,
    dataset: int,
    version: int,
    proxies: Sequence[str],
    threshold: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    wait_all: bool = False,
    receiving: ConsumerKey | None = None,
    service: int = DEFAULT_SERVICE_ID,
) -> FetchReport:
    """As :func:`fetch_data_key`, returning a :class:`FetchReport` (key and per-proxy outcome).

    With ``wait_all`` every proxy's answer is awaited (to audit them all), not only
    until the key opens. ``receiving`` is the key the fragments were made for
    (default: the consumer's wallet-derived key on this chain).
    """
    check_threshold(threshold, len(proxies), SharingError)
    if wrapped.scope != dataset_scope(dataset, version):
        raise SharingError(
            f"this wrapped key is not the one of dataset {dataset} version {version}"
        )
    domain = Domain.of(ledger)
    receiving = receiving or consumer.consumer_key(domain.chain_id)
    built = ReencryptBody.build(
        consumer, domain, dataset, version, wrapped.capsule, service=service
    )
    body = built.to_json()
    request_digest = built.signed.digest()
    outcomes: list[_Outcome] = []
    # batch -> key fragment id -> (first proxy that answered with it, its fragment)
    by_batch: dict[bytes, dict[bytes, tuple[str, VerifiedCapsuleFrag]]] = {}
    repeated: dict[str, str] = {}
    tried: set[tuple[bytes, tuple[bytes, ...]]] = set()
    opened: tuple[bytes, list[str]] | None = None

    def attempt() -> tuple[bytes, list[str]] | None:
        for batch, frags in by_batch.items():
            if len(frags) < threshold:
                continue
            combos = itertools.combinations(sorted(frags), threshold)
            for combo in itertools.islice(combos, _MAX_COMBINATIONS):
                if (batch, combo) in tried:
                    continue
                tried.add((batch, combo))
                chosen = [frags[i] for i in combo]
                try:
                    key = unwrap_reencrypted(
                        receiving, wrapped.delegating_key, wrapped, [c for _, c in chosen],
                        threshold=threshold,
                    )  # fmt: skip
                except (NotEnoughFragments, UnwrapFailed):
                    continue
                return key, [p for p, _ in chosen]
        return None

    pool = ThreadPoolExecutor(max_workers=len(proxies), thread_name_prefix="fetch")
    client = httpx.Client(timeout=timeout, verify=verify_context())
    try:
        pending: set[Future[_Outcome]] = {
            pool.submit(
                _ask, client, p, body, wrapped, owner_public.verifying_key, receiving.public_key
            )
            for p in proxies
        }
        while pending and (wait_all or opened is None):
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                outcome = future.result()
                outcomes.append(outcome)
                for batch, cfrag in outcome.cfrags.items():
                    frags = by_batch.setdefault(batch, {})
                    kfrag_id = cfrag_kfrag_id(cfrag)
                    first = frags.get(kfrag_id)
                    if first is None:
                        frags[kfrag_id] = (outcome.proxy, cfrag)
                    elif first[0] != outcome.proxy:
                        repeated[outcome.proxy] = (
                            f"repeated the key fragment {first[0]} answered with (a relayed "
                            "answer or a replayed delivery)"
                        )
                if outcome.bad:
                    _log.warning(
                        "proxy %s returned a bad capsule fragment: %s", outcome.proxy, outcome.bad
                    )
            if opened is None:
                opened = attempt()
    finally:
        # The key opened: do not wait for slow proxies.
        pool.shutdown(wait=False, cancel_futures=True)
        if not pending:
            client.close()
    for proxy, why in repeated.items():
        _log.warning("proxy %s %s", proxy, why)
    bad = {o.proxy: o.bad for o in outcomes if o.bad} | repeated
    refused = {
        o.proxy: f"{o.code}: {o.detail}" for o in outcomes if o.code and o.code != "unreachable"
    }
    unreachable = {o.proxy: o.detail for o in outcomes if o.code == "unreachable"}
    faults = ledger.deployment.contracts.get("ProxyFaults", ZERO_ADDRESS)
    evidence: dict[str, Evidence] = {}
    for o in outcomes:
        if o.bad_answer is None:
            continue
        raw_cfrag, signature = o.bad_answer
        digest = answer_digest(
            domain.chain_id, faults, dataset, version, consumer.address, request_digest, raw_cfrag
        )
        with contextlib.suppress(ValueError):
            evidence[o.proxy] = Evidence(
                recover_answer(digest, signature), o.proxy, dataset, version,
                consumer.address, request_digest, raw_cfrag, signature, o.bad,
                domain.chain_id, faults,
            )  # fmt: skip
    if opened is not None:
        return FetchReport(opened[0], opened[1], bad, refused, unreachable, evidence)
    distinct = max((len(f) for f in by_batch.values()), default=0)
    answered = sum(1 for o in outcomes if o.cfrags)
    if answered >= threshold and not bad and distinct < threshold:
        raise NoKeyFragment(
            f"{answered} proxies answered, but with fragments of different delegations "
            f"(no batch reaches {threshold}): the owner's agent is still delivering, or "
            "must delegate again"
        )
    error = _shortfall(outcomes, distinct, threshold, len(proxies), bad)
    # Liars may be why the key did not open: their signed answers go with the error.
    error.evidence = evidence
    raise error


def _shortfall(
    outcomes: list[_Outcome], good: int, threshold: int, total: int, bad: dict[str, str]
) -> SharingError:
    codes = {o.code: o for o in outcomes if o.code}
    for code in _PRIORITY:
        if code in codes:
            error = REFUSALS[code]
            if issubclass(error, AccessRefused | SignatureRefused | NoKeyFragment):
                count = sum(1 for o in outcomes if o.code == code)
                return error(f"{codes[code].detail} (said {count} of {total} proxies)")
    if bad:
        return ForgedFragment(
            f"only {good} distinct valid capsule fragment(s), {threshold} needed; "
            "misbehaving proxies: " + "; ".join(f"{p}: {why}" for p, why in sorted(bad.items()))
        )
    reasons = "; ".join(f"{o.proxy}: {o.code} {o.detail}".strip() for o in outcomes)
    return NotEnoughProxies(
        f"only {good} of {total} proxies gave a valid fragment, {threshold} needed"
        + (f" ({reasons})" if reasons else "")
    )


def fetch_data_key(
    ledger: Ledger,
    consumer: Identity,
    owner_public: PublicIdentity,
    wrapped: WrappedKey,
    dataset: int,
    version: int,
    proxies: Sequence[str],
    threshold: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    receiving: ConsumerKey | None = None,
) -> bytes:
    """The data key of ``dataset`` ``version``, opened from ``threshold`` proxies' fragments.

    ``owner_public`` is the owner's public identity (its verifying key checks every
    fragment); ``wrapped`` is the version's wrapped key (from the manifest). Raises
    the :class:`~datagora.sharing.errors.AccessRefused` subclass that says why the
    ledger refuses (``NoOrder``, ``ExpiredOrder``, ``GrantRevoked``, ``RequestDenied``…),
    :class:`SignatureRefused`, :class:`NoKeyFragment` (not delegated yet),
    :class:`ForgedFragment` (too few valid fragments because proxies lied) or
    :class:`NotEnoughProxies` (too few reachable). Bad proxies are logged even when
    the fetch succeeds; :func:`fetch_data_key_report` returns them.
    """
    return fetch_data_key_report(
        ledger, consumer, owner_public, wrapped, dataset, version, proxies, threshold,
        timeout=timeout, receiving=receiving,
    ).data_key  # fmt: skip


def report_fault(ledger: Ledger, consumer: Identity, evidence: Evidence) -> int:
    """Report on chain (``ProxyFaults``) a proxy's signed bad fragment, as the consumer
    who asked; the report id. The dataset's owner then confirms (slashing the proxy's
    stake to the consumer) or dismisses it."""
    if ledger.proxy_faults is None:
        raise SharingError("this deployment has no ProxyFaults contract: redeploy")
    report_id, _ = ledger.proxy_faults.report(
        consumer.account, evidence.dataset, evidence.version, evidence.request_digest,
        evidence.cfrag, evidence.signature,
    )  # fmt: skip
    return report_id
