"""The consumer's side: ask the proxies for capsule fragments, verify them, open the data key.

One signed ``FragmentRequest`` goes to every proxy at once (each proxy accepts its
nonce once); each capsule fragment is verified against the owner's verifying key,
the wrapped key's delegating key and the consumer's own key before it is used,
and a proxy that returns a bad one is reported. A proxy answers with one capsule
fragment per *batch* of key fragments it holds for the consumer (an owner may have
delegated more than once; fragments of different batches do not combine), and
``threshold`` valid fragments of one batch are enough: the rest are not waited for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from datagora.crypto.errors import BadFragment
from datagora.crypto.keys import Identity, PublicIdentity
from datagora.crypto.pre import (
    VerifiedCapsuleFrag,
    WrappedKey,
    dataset_scope,
    unwrap_reencrypted,
    verify_cfrag,
)
from datagora.ledger import Ledger
from datagora.sharing.errors import (
    REFUSALS,
    AccessRefused,
    ForgedFragment,
    NoKeyFragment,
    NotEnoughProxies,
    SharingError,
    SignatureRefused,
)
from datagora.sharing.wire import ReencryptBody

__all__ = ["FetchReport", "fetch_data_key", "fetch_data_key_report"]

_log = logging.getLogger(__name__)
DEFAULT_TIMEOUT: Final = 10.0
_MAX_BATCHES: Final = 16
# When too few fragments come back, the most telling refusal is raised first.
_PRIORITY: Final = (
    "dataset_inactive",
    "deny_listed",
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


@dataclass(frozen=True)
class FetchReport:
    """What a key fetch found: the key, and which proxies helped, refused, lied or were down."""

    data_key: bytes = field(repr=False)
    good: list[str]
    bad: dict[str, str]
    refused: dict[str, str]
    unreachable: dict[str, str]


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
            cfrags[batch] = verify_cfrag(
                raw, wrapped.capsule, verifying_key, wrapped.delegating_key, consumer_key
            )
        except (KeyError, TypeError, ValueError):
            return _Outcome(proxy, bad="the answer holds a malformed capsule fragment")
        except BadFragment as exc:
            return _Outcome(proxy, bad=str(exc))
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
) -> FetchReport:
    """As :func:`fetch_data_key`, returning a :class:`FetchReport` (key and per-proxy outcome).

    With ``wait_all`` every proxy's answer is awaited (to audit them all), not only
    the first ``threshold`` valid ones.
    """
    if not 1 <= threshold <= len(proxies):
        raise SharingError(f"need 1 ≤ threshold ≤ proxies, got {threshold} of {len(proxies)}")
    if wrapped.scope != dataset_scope(dataset, version):
        raise SharingError(
            f"this wrapped key is not the one of dataset {dataset} version {version}"
        )
    body = ReencryptBody.build(
        consumer, ledger.chain.chain_id, dataset, version, wrapped.capsule
    ).to_json()
    outcomes: list[_Outcome] = []
    by_batch: dict[bytes, dict[str, VerifiedCapsuleFrag]] = {}

    def enough() -> dict[str, VerifiedCapsuleFrag] | None:
        return next((b for b in by_batch.values() if len(b) >= threshold), None)

    pool = ThreadPoolExecutor(max_workers=len(proxies), thread_name_prefix="fetch")
    client = httpx.Client(timeout=timeout)
    try:
        pending: set[Future[_Outcome]] = {
            pool.submit(
                _ask, client, p, body, wrapped, owner_public.verifying_key,
                consumer.umbral_public_key,
            )
            for p in proxies
        }  # fmt: skip
        while pending and (wait_all or enough() is None):
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                outcome = future.result()
                outcomes.append(outcome)
                for batch, cfrag in outcome.cfrags.items():
                    by_batch.setdefault(batch, {})[outcome.proxy] = cfrag
                if outcome.bad:
                    _log.warning(
                        "proxy %s returned a bad capsule fragment: %s", outcome.proxy, outcome.bad
                    )
    finally:
        # Enough fragments: do not wait for slow proxies.
        pool.shutdown(wait=False, cancel_futures=True)
        if not pending:
            client.close()
    bad = {o.proxy: o.bad for o in outcomes if o.bad}
    refused = {
        o.proxy: f"{o.code}: {o.detail}" for o in outcomes if o.code and o.code != "unreachable"
    }
    unreachable = {o.proxy: o.detail for o in outcomes if o.code == "unreachable"}
    answered = sum(1 for o in outcomes if o.cfrags)
    chosen = enough()
    if chosen is None and answered >= threshold:
        raise NoKeyFragment(
            f"{answered} proxies answered, but with fragments of different delegations "
            f"(no batch reaches {threshold}): the owner's agent is still delivering, or "
            "must delegate again"
        )
    if chosen is None:
        raise _shortfall(outcomes, answered, threshold, len(proxies), bad)
    key = unwrap_reencrypted(
        consumer, wrapped.delegating_key, wrapped, list(chosen.values()), threshold=threshold
    )
    return FetchReport(key, list(chosen), bad, refused, unreachable)


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
            f"only {good} valid capsule fragment(s), {threshold} needed: proxies "
            + ", ".join(sorted(bad))
            + " returned forged or altered fragments"
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
        timeout=timeout,
    ).data_key  # fmt: skip
