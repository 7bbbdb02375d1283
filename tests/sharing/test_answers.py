"""Signed answers: the digest is abi.encode as the contract computes it, and a
signature recovers to its signer only for the exact answer signed."""

from __future__ import annotations

import os

import pytest
from eth_abi.abi import encode

from datagora.crypto.eip712 import keccak
from datagora.crypto.keys import Identity
from datagora.sharing.answers import ANSWER_TAG, answer_digest, recover_answer, sign_answer

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
