"""Signed answers: a proxy signs every capsule fragment it returns, so a consumer holds
evidence that proxy P answered request R with bytes X (``ProxyFaults.vy`` checks it).

The signed digest is EIP-191 (``personal_sign``) over a 32-byte answer digest::

    keccak256(abi.encode(ANSWER_TAG, chain_id, proxy_faults, dataset, version,
                         consumer, request_digest, keccak256(cfrag)))

``request_digest`` is the EIP-712 digest of the consumer's signed FragmentRequest;
``proxy_faults`` the ProxyFaults contract of the deployment (the zero address if it has
none), so an answer is evidence on one deployment only. The contract recomputes the
digest and recovers the signer with ``ecrecover``; it cannot run Umbral verification,
so whether the fragment is bad is for the dataset's owner to confirm
(``docs/threat-model.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from coincurve import PrivateKey, PublicKey

from datagora.crypto.eip712 import keccak, to_checksum_address

__all__ = ["ANSWER_TAG", "Evidence", "answer_digest", "recover_answer", "sign_answer"]

ANSWER_TAG: Final = keccak(b"datagora.cfrag-answer.v1")
_PREFIX: Final = b"\x19Ethereum Signed Message:\n32"


@dataclass(frozen=True)
class Evidence:
    """What a consumer can report: proxy `proxy` (its account) signed `cfrag` as its
    answer to the request with digest `request_digest` of `consumer`."""

    proxy: str
    url: str
    dataset: int
    version: int
    consumer: str
    request_digest: bytes
    cfrag: bytes
    signature: bytes
    reason: str = ""


def answer_digest(
    chain_id: int,
    proxy_faults: str,
    dataset: int,
    version: int,
    consumer: str,
    request_digest: bytes,
    cfrag: bytes,
) -> bytes:
    """The EIP-191 hash the proxy signs (what ``ecrecover`` takes)."""
    # abi.encode of static types: each value one 32-byte word (faster than eth_abi).
    words = (
        ANSWER_TAG,
        chain_id.to_bytes(32, "big"),
        bytes(12) + bytes.fromhex(proxy_faults[2:]),
        dataset.to_bytes(32, "big"),
        version.to_bytes(32, "big"),
        bytes(12) + bytes.fromhex(consumer[2:]),
        request_digest,
        keccak(cfrag),
    )
    inner = keccak(b"".join(words))
    return keccak(_PREFIX + inner)


def sign_answer(private_key: bytes, digest: bytes) -> bytes:
    """A 65-byte ``r ‖ s ‖ v`` signature (v = 27/28) of `digest`."""
    sig = PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def recover_answer(digest: bytes, signature: bytes) -> str:
    """The account that signed `digest`; ValueError if the signature is malformed."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        raise ValueError("an answer signature is 65 bytes, v 27 or 28")
    public = PublicKey.from_signature_and_message(
        signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
    )
    return to_checksum_address(keccak(public.format(compressed=False)[1:])[12:])
