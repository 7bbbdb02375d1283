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

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from coincurve import PrivateKey, PublicKey

from datagora.atomic import write_atomically
from datagora.crypto.eip712 import keccak, to_checksum_address
from datagora.sharing.errors import BadEvidence

__all__ = [
    "ANSWER_TAG",
    "EVIDENCE_FORMAT",
    "IDENTITY_TAG",
    "BadEvidence",
    "Evidence",
    "answer_digest",
    "default_evidence_dir",
    "identity_digest",
    "recover_answer",
    "sign_answer",
]

ANSWER_TAG: Final = keccak(b"datagora.cfrag-answer.v1")
EVIDENCE_FORMAT: Final = "datagora.proxy-fault-evidence.v1"
_PREFIX: Final = b"\x19Ethereum Signed Message:\n32"
_MAX_EVIDENCE_BYTES: Final = 16 * 1024


def default_evidence_dir() -> Path:
    """Where a consumer keeps the evidence of proxies' bad answers:
    ``$DATAGORA_EVIDENCE_DIR`` if set, else ``~/.datagora/evidence``."""
    return Path(os.environ.get("DATAGORA_EVIDENCE_DIR") or "~/.datagora/evidence").expanduser()


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
    chain_id: int = 0
    proxy_faults: str = ""
    """The deployment the evidence is for (its chain and ProxyFaults contract)."""

    def to_json(self) -> dict[str, Any]:
        """The ``datagora.proxy-fault-evidence.v1`` document (``docs/sharing.md``)."""
        return {
            "format": EVIDENCE_FORMAT,
            "chain_id": self.chain_id,
            "proxy_faults": self.proxy_faults,
            "proxy": self.proxy,
            "url": self.url,
            "dataset": self.dataset,
            "version": self.version,
            "consumer": self.consumer,
            "request_digest": self.request_digest.hex(),
            "cfrag": self.cfrag.hex(),
            "signature": self.signature.hex(),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Any) -> Evidence:
        """Parse and check an evidence document: its signature must recover to its
        ``proxy`` over the answer digest it describes. Raises :class:`BadEvidence`."""
        try:
            if data["format"] != EVIDENCE_FORMAT:
                raise ValueError("format")
            ints = [data[k] for k in ("chain_id", "dataset", "version")]
            if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in ints):
                raise ValueError("integers")
            evidence = cls(
                proxy=to_checksum_address(str(data["proxy"])),
                url=str(data["url"]),
                dataset=int(data["dataset"]),
                version=int(data["version"]),
                consumer=to_checksum_address(str(data["consumer"])),
                request_digest=bytes.fromhex(data["request_digest"]),
                cfrag=bytes.fromhex(data["cfrag"]),
                signature=bytes.fromhex(data["signature"]),
                reason=str(data["reason"]),
                chain_id=int(data["chain_id"]),
                proxy_faults=to_checksum_address(str(data["proxy_faults"])),
            )
            if len(evidence.request_digest) != 32 or not 0 < len(evidence.cfrag) <= 512:
                raise ValueError("sizes")
            signer = recover_answer(evidence.digest(), evidence.signature)
        except (KeyError, TypeError, ValueError):
            raise BadEvidence(
                f"not a {EVIDENCE_FORMAT} document (the file a download keeps when a "
                "proxy signs a bad fragment)"
            ) from None
        if signer != evidence.proxy:
            raise BadEvidence(
                f"the signature in this evidence is by {signer}, not by the proxy it names "
                f"({evidence.proxy}): it proves nothing"
            )
        return evidence

    def digest(self) -> bytes:
        """The answer digest the proxy signed."""
        return answer_digest(
            self.chain_id, self.proxy_faults, self.dataset, self.version, self.consumer,
            self.request_digest, self.cfrag,
        )  # fmt: skip

    def save(self, directory: Path) -> Path:
        """Write this evidence to ``directory`` (one file per signed answer, named by its
        digest, so keeping it twice overwrites it); returns the file."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"fault-{self.proxy.lower()}-{self.digest().hex()[:16]}.json"
        write_atomically(path, json.dumps(self.to_json(), indent=2).encode() + b"\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Evidence:
        """Read and check an evidence file (:meth:`from_json`)."""
        try:
            with path.open("rb") as f:
                raw = f.read(_MAX_EVIDENCE_BYTES + 1)
        except OSError as exc:
            raise BadEvidence(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(raw) > _MAX_EVIDENCE_BYTES:
            raise BadEvidence(f"{path} is larger than any evidence file")
        try:
            data = json.loads(raw)
        except ValueError:
            raise BadEvidence(f"{path} is not JSON") from None
        return cls.from_json(data)


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


IDENTITY_TAG: Final = keccak(b"datagora.proxy-identity.v2")


def identity_digest(
    chain_id: int,
    verifying_contract: str,
    address: str,
    umbral_public_key: bytes,
    service: int,
    challenge: bytes,
) -> bytes:
    """The EIP-191 hash a proxy signs in its ``GET /identity`` answer: its account, its
    Umbral key, the deployment and service it serves, and the asker's 32-byte
    ``challenge`` (so an old answer cannot be replayed by whoever holds the URL)."""
    words = (
        IDENTITY_TAG,
        chain_id.to_bytes(32, "big"),
        bytes(12) + bytes.fromhex(verifying_contract[2:]),
        bytes(12) + bytes.fromhex(address[2:]),
        keccak(umbral_public_key),
        service.to_bytes(32, "big"),
        challenge,
    )
    return keccak(_PREFIX + keccak(b"".join(words)))


def sign_answer(private_key: PrivateKey | bytes, digest: bytes) -> bytes:
    """A 65-byte ``r ‖ s ‖ v`` signature (v = 27/28) of `digest`.

    A proxy passes its key as a :class:`coincurve.PrivateKey` made once: making one
    from bytes derives its public keys, which costs twice the signature itself."""
    key = private_key if isinstance(private_key, PrivateKey) else PrivateKey(private_key)
    sig = key.sign_recoverable(digest, hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def recover_answer(digest: bytes, signature: bytes) -> str:
    """The account that signed `digest`; ValueError if the signature is malformed."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        raise ValueError("an answer signature is 65 bytes, v 27 or 28")
    public = PublicKey.from_signature_and_message(
        signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
    )
    return to_checksum_address(keccak(public.format(compressed=False)[1:])[12:])
