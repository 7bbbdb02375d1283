"""EIP-712 signed requests: every type, every refusal, the JSON form, with each nonce store."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

import datagora.crypto.eip712 as eip712_module
from datagora.compute.requests import ComputeRequest, JobRequest, OwnerJobRequest
from datagora.crypto.eip712 import (
    MAX_LIFETIME_S,
    REQUEST_TYPES,
    Request,
    SignedRequest,
    VerifiedRequest,
    eip712_digest,
    new_nonce,
    register_request,
    sign_request,
    typed_data,
    verify_request,
)
from datagora.crypto.errors import (
    ExpiryTooFar,
    MalformedRequest,
    ReplayedRequest,
    SignatureExpired,
    SignatureInvalid,
    UnexpectedRequestType,
    WrongChain,
    WrongSigner,
)
from datagora.crypto.keys import Identity
from datagora.crypto.nonces import FileNonceStore, MemoryNonceStore, NonceStore, SqliteNonceStore
from datagora.sharing.requests import DelegationRequest, FragmentRequest
from datagora.storage.auth import StorageWrite

CONSUMER = Identity.generate()
OWNER = Identity.generate()
CHAIN = 31337
NOW = 1_800_000_000
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_PROXY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def fragment(consumer: Identity = CONSUMER, expires: int = NOW + 60, **kw: Any) -> FragmentRequest:
    fields: dict[str, Any] = {
        "consumer": consumer.address,
        "dataset": 7,
        "version": 1,
        "service": 0,
        "capsule": keccak(b"capsule"),
        "nonce": new_nonce(),
        "expires": expires,
    }
    fields.update(kw)
    return FragmentRequest(**fields)


def every_request_type() -> list[tuple[Identity, Request]]:
    return [
        (CONSUMER, fragment()),
        (
            OWNER,
            DelegationRequest(
                delegator=OWNER.address,
                proxy=OTHER_PROXY,
                consumer=CONSUMER.address,
                consumer_key=CONSUMER.umbral_public_key,
                dataset=2**200,
                version=4,
                grant=12,
                threshold=2,
                shares=3,
                batch=new_nonce(),
                nonce=new_nonce(),
                expires=NOW + 300,
            ),
        ),
        (
            CONSUMER,
            ComputeRequest(
                consumer=CONSUMER.address,
                dataset=9,
                order=keccak(b"order tx"),
                algorithm=keccak(b"algorithm"),
                params=keccak(b"{}"),
                nonce=new_nonce(),
                expires=NOW + 600,
            ),
        ),
        (
            CONSUMER,
            JobRequest(
                consumer=CONSUMER.address,
                job=keccak(b"job"),
                action="result",
                nonce=new_nonce(),
                expires=NOW + 1,
            ),
        ),
        (
            OWNER,
            OwnerJobRequest(
                owner=OWNER.address,
                job=7,
                action="deny",
                reason=keccak(b"not this algorithm"),
                nonce=new_nonce(),
                expires=NOW + 60,
            ),
        ),
        (
            OWNER,
            StorageWrite(
                writer=OWNER.address,
                node="http://127.0.0.1:7001",
                method="PUT",
                path="/shares",
                content=keccak(b"frame index"),
                size=2**40,
                nonce=new_nonce(),
                expires=NOW + 120,
            ),
        ),
    ]


@pytest.fixture(params=["memory", "sqlite", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NonceStore]:
    if request.param == "memory":
        yield MemoryNonceStore()
    elif request.param == "sqlite":
        with SqliteNonceStore(tmp_path / "nonces.sqlite") as sqlite_store:
            yield sqlite_store
    else:
        with FileNonceStore(tmp_path / "nonces.log") as file_store:
            yield file_store


@pytest.mark.parametrize("index", range(4))
def test_every_request_type_verifies_once(index: int, store: NonceStore) -> None:
    identity, request = every_request_type()[index]
    signed = sign_request(identity, request, CHAIN)
    assert len(signed.signature) == 65
    verified = verify_request(signed, CHAIN, NOW, store, expect=type(request))
    assert verified.request == request
    assert verified.signer == identity.address
    assert verified.digest == signed.digest()
    with pytest.raises(ReplayedRequest, match="replayed"):
        verify_request(signed, CHAIN, NOW + 1 if index != 3 else NOW, store)


@pytest.mark.parametrize("index", range(4))
def test_json_round_trip_keeps_the_signature_valid(index: int) -> None:
    identity, request = every_request_type()[index]
    signed = sign_request(identity, request, CHAIN, verifying_contract=CONTRACT.lower())
    wire = json.dumps(signed.to_json())
    parsed = SignedRequest.from_json(json.loads(wire))
    assert parsed == signed
    verified = verify_request(parsed, CHAIN, NOW, MemoryNonceStore(), verifying_contract=CONTRACT)
    assert verified.request == request


def test_digest_matches_an_independent_eip712_encoding() -> None:
    """Re-derive the signed hash from the rules in docs/sharing.md, without eth-account."""
    request = fragment()
    signed = sign_request(CONSUMER, request, CHAIN)
    domain_type = b"EIP712Domain(string name,string version,uint256 chainId)"
    domain = keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint256"],
            [keccak(domain_type), keccak(b"datagora"), keccak(b"1"), CHAIN],
        )
    )
    type_string = (
        b"FragmentRequest(address consumer,uint256 dataset,uint32 version,uint32 service,"
        b"bytes32 capsule,bytes32 nonce,uint64 expires)"
    )
    struct = keccak(
        abi_encode(
            ["bytes32", "address", "uint256", "uint32", "uint32", "bytes32", "bytes32", "uint64"],
            [
                keccak(type_string),
                request.consumer,
                request.dataset,
                request.version,
                request.service,
                request.capsule,
                request.nonce,
                request.expires,
            ],
        )
    )
    assert signed.digest() == keccak(b"\x19\x01" + domain + struct)
    assert Account._recover_hash(signed.digest(), signature=signed.signature) == CONSUMER.address


def test_expired_and_too_far_future(store: NonceStore) -> None:
    expired = sign_request(CONSUMER, fragment(expires=NOW), CHAIN)
    with pytest.raises(SignatureExpired):
        verify_request(expired, CHAIN, NOW, store)
    far = sign_request(CONSUMER, fragment(expires=NOW + MAX_LIFETIME_S + 1), CHAIN)
    with pytest.raises(ExpiryTooFar):
        verify_request(far, CHAIN, NOW, store)
    edge = sign_request(CONSUMER, fragment(expires=NOW + MAX_LIFETIME_S), CHAIN)
    verify_request(edge, CHAIN, NOW, store)
    # Refused requests did not use up their nonces.
    verify_request(far, CHAIN, NOW + 1, store)


def test_signed_by_another_account_is_refused(store: NonceStore) -> None:
    request = fragment()
    with pytest.raises(WrongSigner):
        sign_request(OWNER, request, CHAIN)
    # Forge it anyway: OWNER signs the very typed data that names CONSUMER.
    genuine = sign_request(CONSUMER, request, CHAIN)
    forged_signature = OWNER.account.sign_message(
        encode_typed_data(full_message=typed_data(request, CHAIN))
    ).signature
    forged = dataclasses.replace(genuine, signature=bytes(forged_signature))
    with pytest.raises(WrongSigner, match=CONSUMER.address):
        verify_request(forged, CHAIN, NOW, store)
    # The refused forgery did not burn the genuine request's nonce.
    verify_request(genuine, CHAIN, NOW, store)


tampers: list[tuple[str, Callable[[FragmentRequest], FragmentRequest]]] = [
    ("dataset", lambda r: dataclasses.replace(r, dataset=r.dataset + 1)),
    ("version", lambda r: dataclasses.replace(r, version=r.version + 1)),
    ("capsule", lambda r: dataclasses.replace(r, capsule=keccak(b"another capsule"))),
    ("nonce", lambda r: dataclasses.replace(r, nonce=new_nonce())),
    ("expires", lambda r: dataclasses.replace(r, expires=r.expires + 1)),
    ("consumer", lambda r: dataclasses.replace(r, consumer=OWNER.address)),
]


@pytest.mark.parametrize("tamper", [t for _, t in tampers], ids=[n for n, _ in tampers])
def test_tampered_field_is_refused(
    tamper: Callable[[FragmentRequest], FragmentRequest], store: NonceStore
) -> None:
    signed = sign_request(CONSUMER, fragment(), CHAIN)
    altered = dataclasses.replace(signed, request=tamper(signed.request))
    with pytest.raises(WrongSigner, match="altered or signed by another account"):
        verify_request(altered, CHAIN, NOW, store)


def test_tampered_json_is_refused() -> None:
    signed = sign_request(CONSUMER, fragment(), CHAIN)
    wire = signed.to_json()
    wire["message"]["version"] = 2
    with pytest.raises(WrongSigner):
        verify_request(SignedRequest.from_json(wire), CHAIN, NOW, MemoryNonceStore())


def test_wrong_chain_or_contract_is_refused(store: NonceStore) -> None:
    signed = sign_request(CONSUMER, fragment(), CHAIN)
    with pytest.raises(WrongChain, match="chain 31337"):
        verify_request(signed, 1, NOW, store)
    with pytest.raises(WrongChain):
        verify_request(signed, CHAIN, NOW, store, verifying_contract=CONTRACT)
    # Relabelling the chain in the envelope does not help: recovery uses the service's domain.
    relabelled = dataclasses.replace(signed, chain_id=1)
    with pytest.raises(WrongSigner):
        verify_request(relabelled, 1, NOW, store)
    on_contract = sign_request(CONSUMER, fragment(), CHAIN, verifying_contract=CONTRACT)
    with pytest.raises(WrongChain):
        verify_request(on_contract, CHAIN, NOW, store)


def test_unexpected_type_is_refused() -> None:
    identity, request = every_request_type()[2]
    signed = sign_request(identity, request, CHAIN)
    with pytest.raises(UnexpectedRequestType, match="FragmentRequest"):
        verify_request(signed, CHAIN, NOW, MemoryNonceStore(), expect=FragmentRequest)


@pytest.mark.parametrize(
    "signature",
    [b"\x00" * 65, b"\xff" * 65, b"\x01" * 64 + b"\x05"],
    ids=["zero", "s-out-of-range", "bad-v"],
)
def test_garbage_signatures_are_refused(signature: bytes) -> None:
    signed = dataclasses.replace(sign_request(CONSUMER, fragment(), CHAIN), signature=signature)
    with pytest.raises(SignatureInvalid):
        verify_request(signed, CHAIN, NOW, MemoryNonceStore())


def test_nonces_are_per_account() -> None:
    store = MemoryNonceStore()
    nonce = new_nonce()
    first = sign_request(CONSUMER, fragment(nonce=nonce), CHAIN)
    verify_request(first, CHAIN, NOW, store)
    other = Identity.generate()
    second = sign_request(other, fragment(consumer=other, nonce=nonce), CHAIN)
    verify_request(second, CHAIN, NOW, store)


def test_stores_forget_expired_nonces(store: NonceStore) -> None:
    for _ in range(5):
        verify_request(sign_request(CONSUMER, fragment(expires=NOW + 10), CHAIN), CHAIN, NOW, store)
    assert len(store) == 5
    late = sign_request(CONSUMER, fragment(expires=NOW + 100), CHAIN)
    verify_request(late, CHAIN, NOW + 10, store)
    assert len(store) == 1


def test_sqlite_store_remembers_across_restart(tmp_path: Path) -> None:
    path = tmp_path / "proxy" / "nonces.sqlite"
    path.parent.mkdir()
    signed = sign_request(CONSUMER, fragment(), CHAIN)
    with SqliteNonceStore(path) as first:
        verify_request(signed, CHAIN, NOW, first)
    with SqliteNonceStore(path) as second:
        with pytest.raises(ReplayedRequest):
            verify_request(signed, CHAIN, NOW + 5, second)
        # Another store instance on the same file (as another process would be) agrees.
        with SqliteNonceStore(path, durable=True) as third, pytest.raises(ReplayedRequest):
            verify_request(signed, CHAIN, NOW + 5, third)


def test_concurrent_replays_accept_exactly_one(store: NonceStore, tmp_path: Path) -> None:
    signed = sign_request(CONSUMER, fragment(), CHAIN)
    stores: list[NonceStore] = [store]
    if isinstance(store, SqliteNonceStore):
        # A second connection to the same file races the first.
        stores.append(SqliteNonceStore(tmp_path / "nonces.sqlite"))
    if isinstance(store, FileNonceStore):
        stores.append(FileNonceStore(tmp_path / "nonces.log"))
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            verify_request(signed, CHAIN, NOW, stores[i % len(stores)])
            result = "ok"
        except ReplayedRequest:
            result = "replay"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] + ["replay"] * 15
    for extra in stores[1:]:
        extra.close()  # type: ignore[attr-defined]


def test_verified_request_cannot_be_built_by_hand() -> None:
    with pytest.raises(TypeError):
        VerifiedRequest(fragment(), CONSUMER.address, CHAIN, b"\x00" * 32, object())


@pytest.mark.parametrize(
    "make",
    [
        lambda: fragment(dataset=-1),
        lambda: fragment(version=2**32),
        lambda: fragment(capsule=b"\x00" * 31),
        lambda: fragment(nonce="00" * 32),
        lambda: fragment(expires=True),
        lambda: FragmentRequest("0x1234", 1, 1, 0, b"\x00" * 32, b"\x00" * 32, NOW),
        lambda: JobRequest(CONSUMER.address, b"\x00" * 32, "delete", new_nonce(), NOW),
        lambda: OwnerJobRequest(OWNER.address, 1, "erase", b"\x00" * 32, new_nonce(), NOW),
        lambda: DelegationRequest(
            OWNER.address,
            OTHER_PROXY,
            CONSUMER.address,
            b"\x02" * 10,
            1,
            1,
            0,
            2,
            3,
            new_nonce(),
            new_nonce(),
            NOW,
        ),
        lambda: DelegationRequest(
            OWNER.address,
            OTHER_PROXY,
            CONSUMER.address,
            b"\x02" * 33,
            1,
            1,
            0,
            3,
            2,
            new_nonce(),
            new_nonce(),
            NOW,
        ),
        # threshold 1 of 3 proxies: any one proxy could open the key alone
        lambda: DelegationRequest(
            OWNER.address,
            OTHER_PROXY,
            CONSUMER.address,
            b"\x02" * 33,
            1,
            1,
            0,
            1,
            3,
            new_nonce(),
            new_nonce(),
            NOW,
        ),
    ],
)
def test_malformed_requests_are_refused(make: Callable[[], Request]) -> None:
    with pytest.raises(MalformedRequest):
        make()


def test_malformed_json_is_refused() -> None:
    wire = sign_request(CONSUMER, fragment(), CHAIN).to_json()
    bad: list[Any] = [
        [],
        {**wire, "format": "datagora.signed-request.v2"},
        {**wire, "type": "TransferEverything"},
        {**wire, "extra": 1},
        {**wire, "signature": "0x" + "00" * 64},
        {**wire, "signature": "00" * 65},
        {**wire, "domain": {**wire["domain"], "name": "other"}},
        {**wire, "domain": {"name": "datagora", "version": "1"}},
        {**wire, "message": {**wire["message"], "dataset": 7}},
        {**wire, "message": {**wire["message"], "dataset": "007"}},
        {**wire, "message": {**wire["message"], "nonce": wire["message"]["nonce"].upper()}},
        {**wire, "message": {**wire["message"], "extra": "x"}},
    ]
    for data in bad:
        with pytest.raises(MalformedRequest):
            SignedRequest.from_json(data)


@settings(max_examples=20, deadline=None)
@given(
    dataset=st.integers(0, 2**256 - 1),
    version=st.integers(0, 2**32 - 1),
    ttl=st.integers(1, MAX_LIFETIME_S),
    chain=st.integers(1, 2**64),
)
def test_any_valid_request_round_trips_and_verifies(
    dataset: int, version: int, ttl: int, chain: int
) -> None:
    request = fragment(dataset=dataset, version=version, expires=NOW + ttl)
    signed = sign_request(CONSUMER, request, chain)
    parsed = SignedRequest.from_json(json.loads(json.dumps(signed.to_json())))
    verified = verify_request(parsed, chain, NOW, MemoryNonceStore(), expect=FragmentRequest)
    assert verified.request == request


@pytest.mark.parametrize("contract", [None, "0x" + "ab" * 20])
def test_the_fast_digest_is_eip712_as_eth_account_encodes_it(contract: str | None) -> None:
    from eth_account.messages import _hash_eip191_message, encode_typed_data

    for _, request in every_request_type():
        expected = _hash_eip191_message(
            encode_typed_data(full_message=typed_data(request, CHAIN, contract))
        )
        assert eip712_digest(request, CHAIN, contract) == bytes(expected)
    assert eip712_digest(fragment(), CHAIN) != eip712_digest(fragment(), CHAIN + 1)


def test_a_high_s_or_bad_v_signature_is_refused() -> None:
    signed = sign_request(CONSUMER, fragment(), CHAIN)
    r, s_value, v = signed.signature[:32], signed.signature[32:64], signed.signature[64]
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    for bad in (r + n.to_bytes(32, "big") + bytes([v]), r + s_value + bytes([29])):
        forged = SignedRequest(signed.request, CHAIN, None, bad)
        with pytest.raises(SignatureInvalid):
            verify_request(forged, CHAIN, NOW, MemoryNonceStore())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_the_fast_keccak_is_ethereums(data: bytes) -> None:
    assert eip712_module.keccak(data) == keccak(data)


def test_each_layer_registers_its_request_types_once() -> None:
    assert {
        "FragmentRequest": FragmentRequest,
        "DelegationRequest": DelegationRequest,
        "ComputeRequest": ComputeRequest,
        "JobRequest": JobRequest,
        "OwnerJobRequest": OwnerJobRequest,
        "StorageWrite": StorageWrite,
    } == REQUEST_TYPES
    assert register_request(FragmentRequest) is FragmentRequest  # again: no change

    @dataclasses.dataclass(frozen=True, slots=True)
    class Impostor(Request):
        PRIMARY_TYPE: ClassVar[str] = "FragmentRequest"

    with pytest.raises(ValueError, match="registered twice"):
        register_request(Impostor)
    assert REQUEST_TYPES["FragmentRequest"] is FragmentRequest
