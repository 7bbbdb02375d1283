"""Signed answers: the digest is abi.encode as the contract computes it, and a
signature recovers to its signer only for the exact answer signed; a proxy's signed
identity and a consumer's evidence file are checked the same way."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from eth_abi.abi import encode

from datagora.crypto.eip712 import keccak, to_checksum_address
from datagora.crypto.keys import Identity
from datagora.sharing.answers import (
    ANSWER_TAG,
    BadEvidence,
    Evidence,
    answer_digest,
    identity_digest,
    recover_answer,
    sign_answer,
)
from datagora.sharing.directory import parse_identity
from datagora.sharing.errors import ProxyUnavailable
from datagora.sharing.proxy import PROXY_IDENTITY_FORMAT

FAULTS = "0x" + "ab" * 20
CONSUMER = "0x" + "cd" * 20


def test_the_digest_is_the_contracts_abi_encoding() -> None:
    request, cfrag = os.urandom(32), os.urandom(381)
    types = ["bytes32", "uint256", "address", "uint256", "uint256", "address", "bytes32", "bytes32"]
    values = [ANSWER_TAG, 31337, FAULTS, 7, 3, CONSUMER, request, keccak(cfrag)]
    inner = keccak(encode(types, values))
    expected = keccak(b"\x19Ethereum Signed Message:\n32" + inner)
    assert answer_digest(31337, FAULTS, 7, 3, CONSUMER, request, cfrag) == expected


def test_a_signature_names_its_proxy_for_that_answer_only() -> None:
    proxy = Identity.generate()
    request, cfrag = os.urandom(32), os.urandom(381)
    digest = answer_digest(1, FAULTS, 1, 1, CONSUMER, request, cfrag)
    signature = sign_answer(bytes(proxy.account.key), digest)
    assert recover_answer(digest, signature) == proxy.address
    other = answer_digest(1, FAULTS, 1, 1, CONSUMER, request, cfrag[:-1] + b"\x00")
    assert recover_answer(other, signature) != proxy.address
    with pytest.raises(ValueError):
        recover_answer(digest, signature[:64] + b"\x05")


def _identity_answer(signer: Identity, claimed: Identity, challenge: bytes) -> dict[str, object]:
    """A /identity answer naming `claimed`, signed by `signer` over `challenge`."""
    contract = "0x" + "12" * 20
    digest = identity_digest(
        31337, to_checksum_address(contract), claimed.address, claimed.umbral_public_key, 0,
        challenge,
    )  # fmt: skip
    return {
        "format": PROXY_IDENTITY_FORMAT,
        "address": claimed.address,
        "umbral_public_key": claimed.umbral_public_key.hex(),
        "chain_id": 31337,
        "verifying_contract": contract,
        "service": 0,
        "challenge": challenge.hex(),
        "signature": sign_answer(bytes(signer.account.key), digest).hex(),
    }


def test_an_identity_answer_counts_only_signed_by_its_account_for_this_challenge() -> None:
    proxy, impostor = Identity.generate(), Identity.generate()
    challenge = os.urandom(32)
    info = parse_identity("http://p", _identity_answer(proxy, proxy, challenge), 31337, challenge)
    assert (info.address, info.umbral_public_key) == (proxy.address, proxy.umbral_public_key)
    # Whoever holds the endpoint, without the account's key: cannot pass for it ...
    with pytest.raises(ProxyUnavailable, match="not signed by that account"):
        parse_identity("http://p", _identity_answer(impostor, proxy, challenge), 31337, challenge)
    # ... not by replaying an answer the proxy gave to another challenge ...
    with pytest.raises(ProxyUnavailable, match="not signed by that account"):
        parse_identity("http://p", _identity_answer(proxy, proxy, challenge), 31337, os.urandom(32))
    # ... nor by swapping the Umbral key in a signed answer.
    swapped = _identity_answer(proxy, proxy, challenge)
    swapped["umbral_public_key"] = impostor.umbral_public_key.hex()
    with pytest.raises(ProxyUnavailable, match="not signed by that account"):
        parse_identity("http://p", swapped, 31337, challenge)
    unsigned = {k: v for k, v in _identity_answer(proxy, proxy, challenge).items()
                if k != "signature"}  # fmt: skip
    with pytest.raises(ProxyUnavailable, match="no valid identity"):
        parse_identity("http://p", unsigned, 31337, challenge)


def test_evidence_survives_its_file_and_altered_evidence_is_refused(tmp_path: Path) -> None:
    proxy, consumer = Identity.generate(), Identity.generate()
    request, cfrag = os.urandom(32), os.urandom(381)
    digest = answer_digest(31337, to_checksum_address(FAULTS), 7, 3, consumer.address, request,
                           cfrag)  # fmt: skip
    evidence = Evidence(
        proxy.address, "http://p", 7, 3, consumer.address, request, cfrag,
        sign_answer(bytes(proxy.account.key), digest), "bad", 31337, to_checksum_address(FAULTS),
    )  # fmt: skip
    path = evidence.save(tmp_path)
    assert Evidence.load(path) == evidence
    data = json.loads(path.read_text())
    data["dataset"] = 8  # another dataset under the same signature
    path.write_text(json.dumps(data))
    with pytest.raises(BadEvidence, match="proves nothing"):
        Evidence.load(path)
    path.write_text("{}")
    with pytest.raises(BadEvidence, match="not a datagora"):
        Evidence.load(path)
