"""Threshold proxy re-encryption of data keys, over umbral-pre (format ``datagora.umbral-wrap.v1``).

The flow, written down in ``docs/sharing.md`` ("Data-key flow"):

1. The owner wraps a dataset version's 32-byte data key to its delegating key with
   :func:`wrap_key`; the :class:`WrappedKey` (capsule + ciphertext) travels with the
   manifest. The owner alone can open it directly (:func:`unwrap_own`).
2. On a grant, the owner makes ``shares`` key fragments for the consumer's Umbral
   public key (:func:`make_kfrags`), signed with the owner's signing key, and gives
   one to each proxy.
3. A proxy checks its fragment once (:func:`verify_kfrag`) and re-encrypts the
   capsule on request (:func:`reencrypt`), returning a capsule fragment.
4. The consumer checks each capsule fragment (:func:`verify_cfrag`) and, with
   ``threshold`` of them, opens the data key (:func:`unwrap_reencrypted`).

Bytes from the network become umbral-pre's ``VerifiedKeyFrag`` /
``VerifiedCapsuleFrag`` only through the ``verify_*`` functions here, and only those
types are accepted by re-encryption and decryption. No proxy ever holds anything
that opens the data key by itself: fewer than ``threshold`` proxies learn nothing.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import umbral_pre
from umbral_pre import Capsule, PublicKey, VerifiedCapsuleFrag, VerifiedKeyFrag

from datagora.crypto.errors import (
    BadFragment,
    MalformedWrappedKey,
    NotEnoughFragments,
    PreError,
    UnwrapFailed,
    WrongKey,
)

if TYPE_CHECKING:  # annotations only: storage nodes parse wrapped keys without eth-account
    from datagora.crypto.keys import ConsumerKey, DelegationKeys, Identity

__all__ = [
    "DATA_KEY_SIZE",
    "MAX_SCOPE_SIZE",
    "MAX_SHARES",
    "WRAP_FORMAT",
    "PublicKeyLike",
    "VerifiedCapsuleFrag",
    "VerifiedKeyFrag",
    "WrappedKey",
    "cfrag_kfrag_id",
    "dataset_scope",
    "make_kfrags",
    "open_kfrag",
    "reencrypt",
    "seal_kfrag",
    "unwrap_own",
    "unwrap_reencrypted",
    "verify_cfrag",
    "verify_kfrag",
    "wrap_key",
]

WRAP_FORMAT: Final = "datagora.umbral-wrap.v1"
DATA_KEY_SIZE: Final = 32
MAX_SHARES: Final = 255
MAX_SCOPE_SIZE: Final = 128
_PUBLIC_KEY_SIZE: Final = 33
# umbral-pre's DEM is XChaCha20-Poly1305: a 24-byte nonce and a 16-byte tag around the key.
_DEM_OVERHEAD: Final = 24 + 16
_SCOPE_PREFIX: Final = b"datagora/dataset-version/v1"
# umbral-pre 0.11's type stubs omit the exception its verify methods raise.
_VerificationError: type[Exception] = umbral_pre.VerificationError  # type: ignore[attr-defined]

PublicKeyLike: TypeAlias = bytes | PublicKey
"""An Umbral public key: compressed bytes (33) or umbral-pre's ``PublicKey``."""


def dataset_scope(dataset: int, version: int) -> bytes:
    """The delegation scope of one dataset version (see ``docs/sharing.md``).

    Wrapping each version to its own delegating key means fragments made for one
    version cannot re-encrypt another's capsule, even if every proxy colluded.
    """
    if not 0 <= dataset < 2**256 or not 0 <= version < 2**32:
        raise PreError("dataset must fit in uint256 and version in uint32")
    return _SCOPE_PREFIX + dataset.to_bytes(32, "big") + version.to_bytes(4, "big")


def _public_key(key: PublicKeyLike, what: str) -> PublicKey:
    if isinstance(key, PublicKey):
        return key
    if not isinstance(key, bytes | bytearray) or len(key) != _PUBLIC_KEY_SIZE:
        raise PreError(f"{what} must be a 33-byte compressed Umbral public key")
    try:
        return PublicKey.from_compressed_bytes(bytes(key))
    except ValueError:
        raise PreError(f"{what} is not a valid secp256k1 point") from None


def _key_bytes(key: PublicKeyLike) -> bytes:
    return bytes(key.to_compressed_bytes()) if isinstance(key, PublicKey) else bytes(key)


def _capsule(capsule: Capsule | bytes) -> Capsule:
    if isinstance(capsule, Capsule):
        return capsule
    return _parse_capsule(bytes(capsule))


@functools.lru_cache(maxsize=1024)
def _parse_capsule(raw: bytes) -> Capsule:
    # Parsing decompresses two curve points (~0.2 ms); a proxy sees the same capsule
    # of a dataset version from every consumer, and capsules are public.
    try:
        return Capsule.from_bytes(raw)
    except ValueError:
        raise PreError("the capsule is malformed") from None


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted with Umbral to an owner's delegating key.

    ``scope`` says which of the owner's delegating keys it is (empty: the account
    key); ``delegating_key`` is that key's public half, which consumers and proxies
    need to verify fragments. Holds no secret: it is safe to publish.
    """

    delegating_key: bytes
    scope: bytes
    capsule: bytes
    ciphertext: bytes

    def __post_init__(self) -> None:
        for name in ("delegating_key", "scope", "capsule", "ciphertext"):
            if not isinstance(getattr(self, name), bytes):
                raise MalformedWrappedKey(f"{name} must be bytes")
        _public_key(self.delegating_key, "delegating_key")
        if len(self.scope) > MAX_SCOPE_SIZE:
            raise MalformedWrappedKey(f"scope is longer than {MAX_SCOPE_SIZE} bytes")
        try:
            Capsule.from_bytes(self.capsule)
        except ValueError:
            raise MalformedWrappedKey("the capsule is malformed") from None
        if len(self.ciphertext) != DATA_KEY_SIZE + _DEM_OVERHEAD:
            raise MalformedWrappedKey(
                f"the ciphertext must be {DATA_KEY_SIZE + _DEM_OVERHEAD} bytes (a wrapped "
                f"{DATA_KEY_SIZE}-byte key), not {len(self.ciphertext)}"
            )

    def umbral_capsule(self) -> Capsule:
        """The capsule as umbral-pre's type."""
        return Capsule.from_bytes(self.capsule)

    @property
    def capsule_digest(self) -> bytes:
        """SHA-256 of the capsule bytes: how signed fragment requests name the capsule."""
        return hashlib.sha256(self.capsule).digest()

    def to_json(self) -> dict[str, str]:
        """The JSON record (hex fields) specified in ``docs/sharing.md``."""
        return {
            "format": WRAP_FORMAT,
            "delegating_key": self.delegating_key.hex(),
            "scope": self.scope.hex(),
            "capsule": self.capsule.hex(),
            "ciphertext": self.ciphertext.hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WrappedKey:
        """Parse and check a record made by :meth:`to_json`.

        Raises :class:`MalformedWrappedKey` on a wrong format, missing or extra field,
        bad hex, or a field of the wrong size.
        """
        fields = ("delegating_key", "scope", "capsule", "ciphertext")
        if not isinstance(data, Mapping):
            raise MalformedWrappedKey("a wrapped key record is a JSON object")
        if data.get("format") != WRAP_FORMAT:
            raise MalformedWrappedKey(
                f"unsupported wrapped key format {data.get('format')!r}; expected {WRAP_FORMAT}"
            )
        if set(data) != {"format", *fields}:
            raise MalformedWrappedKey(f"a wrapped key record has exactly the fields {fields}")
        values: list[bytes] = []
        for name in fields:
            text = data[name]
            try:
                if not isinstance(text, str) or text != text.lower():
                    raise ValueError
                values.append(bytes.fromhex(text))
            except ValueError:
                raise MalformedWrappedKey(f"{name} must be lowercase hex") from None
        try:
            return cls(*values)
        except PreError as exc:
            raise MalformedWrappedKey(str(exc)) from None


def wrap_key(data_key: bytes, owner_pk: PublicKeyLike, *, scope: bytes = b"") -> WrappedKey:
    """Encrypt a 32-byte data key to the owner's delegating public key.

    ``owner_pk`` is ``identity.delegating_public_key(scope)`` (the account key when
    ``scope`` is empty); ``scope`` is recorded so the owner finds the key again.
    """
    if not isinstance(data_key, bytes | bytearray) or len(data_key) != DATA_KEY_SIZE:
        raise PreError(f"a data key is {DATA_KEY_SIZE} bytes")
    capsule, ciphertext = umbral_pre.encrypt(_public_key(owner_pk, "owner_pk"), bytes(data_key))
    return WrappedKey(_key_bytes(owner_pk), bytes(scope), bytes(capsule), bytes(ciphertext))


def unwrap_own(identity: Identity, wrapped: WrappedKey) -> bytes:
    """The owner opens its own wrapped key.

    Raises :class:`WrongKey` if it was wrapped to another account (or scope) and
    :class:`UnwrapFailed` if the ciphertext was altered.
    """
    secret = identity.delegating_secret_key(wrapped.scope)
    if bytes(secret.public_key().to_compressed_bytes()) != wrapped.delegating_key:
        raise WrongKey(f"this data key was not wrapped to account {identity.address}")
    try:
        return bytes(
            umbral_pre.decrypt_original(secret, wrapped.umbral_capsule(), wrapped.ciphertext)
        )
    except ValueError:
        raise UnwrapFailed("the wrapped data key failed authentication: it was altered") from None


def make_kfrags(
    owner_identity: Identity | DelegationKeys,
    consumer_pk_bytes: PublicKeyLike,
    threshold: int,
    shares: int,
    *,
    scope: bytes = b"",
) -> list[bytes]:
    """Make ``shares`` re-encryption key fragments for a consumer, any ``threshold`` of which
    let it open data keys wrapped to the owner's delegating key of ``scope``.

    Each fragment is signed by the owner's signing key over the delegating and the
    consumer's key, so a proxy or consumer can check who made it and for whom.
    """
    if not 1 <= threshold <= shares <= MAX_SHARES:
        raise PreError(f"need 1 ≤ threshold ≤ shares ≤ {MAX_SHARES}, got {threshold}-of-{shares}")
    kfrags = umbral_pre.generate_kfrags(
        delegating_sk=owner_identity.delegating_secret_key(scope),
        receiving_pk=_public_key(consumer_pk_bytes, "consumer_pk"),
        signer=owner_identity.umbral_signer(),
        threshold=threshold,
        shares=shares,
        sign_delegating_key=True,
        sign_receiving_key=True,
    )
    return [bytes(kfrag) for kfrag in kfrags]


def verify_kfrag(
    kfrag_bytes: bytes,
    owner_verifying_key: PublicKeyLike,
    owner_pk: PublicKeyLike,
    consumer_pk: PublicKeyLike,
) -> VerifiedKeyFrag:
    """Check that a key fragment was made by this owner, for this delegating key and consumer.

    Raises :class:`BadFragment` if it is malformed, forged or meant for someone else.
    """
    verifying = _public_key(owner_verifying_key, "owner_verifying_key")
    delegating = _public_key(owner_pk, "owner_pk")
    receiving = _public_key(consumer_pk, "consumer_pk")
    try:
        kfrag = umbral_pre.KeyFrag.from_bytes(bytes(kfrag_bytes))
    except ValueError:
        raise BadFragment("the key fragment is malformed") from None
    try:
        return kfrag.verify(verifying, delegating, receiving)
    except _VerificationError:
        raise BadFragment(
            "the key fragment was not made by this owner for this consumer (forged or altered)"
        ) from None


def reencrypt(verified_kfrag: VerifiedKeyFrag, capsule: Capsule | bytes) -> bytes:
    """A proxy's step: re-encrypt a capsule with a verified key fragment; returns the cfrag."""
    return bytes(umbral_pre.reencrypt(_capsule(capsule), verified_kfrag))


def verify_cfrag(
    cfrag_bytes: bytes,
    capsule: Capsule | bytes,
    owner_verifying_key: PublicKeyLike,
    owner_pk: PublicKeyLike,
    consumer_pk: PublicKeyLike,
) -> VerifiedCapsuleFrag:
    """Check a capsule fragment returned by a proxy.

    Raises :class:`BadFragment` if it is malformed, was altered, was made for another
    capsule or consumer, or comes from a key fragment the owner did not sign: the
    proxy that sent it misbehaved.
    """
    caps = _capsule(capsule)
    verifying = _public_key(owner_verifying_key, "owner_verifying_key")
    delegating = _public_key(owner_pk, "owner_pk")
    receiving = _public_key(consumer_pk, "consumer_pk")
    try:
        cfrag = umbral_pre.CapsuleFrag.from_bytes(bytes(cfrag_bytes))
        # A flipped byte may already fail point decoding (ValueError) before the proof check.
        return cfrag.verify(caps, verifying, delegating, receiving)
    except (ValueError, _VerificationError):
        raise BadFragment(
            "the capsule fragment does not verify: malformed, altered, or not made for this "
            "capsule and consumer by a fragment of this owner"
        ) from None


def unwrap_reencrypted(
    consumer_identity: Identity | ConsumerKey,
    owner_pk: PublicKeyLike,
    wrapped: WrappedKey,
    verified_cfrags: Sequence[VerifiedCapsuleFrag],
    *,
    threshold: int | None = None,
) -> bytes:
    """The consumer opens a data key from ``threshold`` verified capsule fragments.

    ``consumer_identity`` is the receiving key: a :class:`ConsumerKey` (what orders
    carry), or an :class:`Identity` for its account key. ``owner_pk`` must be the
    wrapped key's delegating key. Fragments of the same key fragment count once.
    Raises :class:`NotEnoughFragments` if too few distinct fragments are given (checked
    up front when ``threshold`` is known), :class:`WrongKey` on a key
    mismatch and :class:`UnwrapFailed` if the ciphertext was altered.
    """
    if _key_bytes(owner_pk) != wrapped.delegating_key:
        raise WrongKey("owner_pk is not the delegating key this data key was wrapped to")
    distinct = list({cfrag_kfrag_id(cf): cf for cf in verified_cfrags}.values())
    if threshold is not None and len(distinct) < threshold:
        raise NotEnoughFragments(
            f"{len(distinct)} distinct capsule fragment(s) given; {threshold} are needed"
        )
    if not distinct:
        raise NotEnoughFragments("no capsule fragment given")
    try:
        plaintext = umbral_pre.decrypt_reencrypted(
            consumer_identity.umbral_secret_key(),
            _public_key(owner_pk, "owner_pk"),
            wrapped.umbral_capsule(),
            distinct,
            wrapped.ciphertext,
        )
    except ValueError as exc:
        if "decryption" in str(exc).lower().split(":", 1)[0]:
            raise UnwrapFailed(
                "the wrapped data key failed authentication: it was altered"
            ) from None
        raise NotEnoughFragments(
            f"{len(distinct)} capsule fragment(s) do not open the key: fewer than the "
            "threshold, or made for another consumer or capsule"
        ) from None
    if plaintext is None:
        raise NotEnoughFragments("the capsule fragments do not open the key")
    return bytes(plaintext)


_KFRAG_ID: Final = slice(66, 98)
# A capsule fragment's simple serialization (umbral-pre 0.11): e1 (33) ‖ v1 (33) ‖
# kfrag id (32) ‖ precursor (33) ‖ proof. Re-encryption is randomised (the proof), so
# two fragments of one key fragment differ in bytes but share the id.


def cfrag_kfrag_id(cfrag: VerifiedCapsuleFrag) -> bytes:
    """The id of the key fragment a capsule fragment was made with: two capsule
    fragments with the same id are *repeated* and count once (umbral refuses them)."""
    return bytes(cfrag.to_bytes_simple()[_KFRAG_ID])


def seal_kfrag(kfrag: bytes, proxy_pk: PublicKeyLike) -> tuple[bytes, bytes]:
    """Encrypt a key fragment to a proxy's Umbral public key: ``(capsule, ciphertext)``.

    Only that proxy opens it (:func:`open_kfrag`); nobody on the way, and no other
    proxy it might be replayed to, learns the fragment.
    """
    capsule, ciphertext = umbral_pre.encrypt(_public_key(proxy_pk, "proxy_pk"), bytes(kfrag))
    return bytes(capsule), bytes(ciphertext)


def open_kfrag(proxy_sk: umbral_pre.SecretKey, capsule: bytes, ciphertext: bytes) -> bytes:
    """A proxy opens a key fragment sealed to it; raises :class:`BadFragment` otherwise."""
    try:
        return bytes(umbral_pre.decrypt_original(proxy_sk, Capsule.from_bytes(capsule), ciphertext))
    except ValueError:
        raise BadFragment(
            "the key fragment is not sealed to this proxy's key (or was altered)"
        ) from None
