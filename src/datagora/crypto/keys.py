"""Account identity: one Ethereum secret, its Umbral keys, and password-encrypted keystores.

An account is an Ethereum key pair. Its 32-byte secret also derives, through
HKDF-SHA256 and umbral-pre's ``SecretKeyFactory``, the account's Umbral key pair
(to which data keys are wrapped and re-encrypted) and a separate Umbral signing key
(which signs the re-encryption key fragments it makes). So one backup, the
Ethereum secret, restores all three. The exact derivation is written down in
``docs/sharing.md`` ("Key derivation").

Keystores are Ethereum keystore v3 JSON files (what geth, MetaMask and eth-account
read), one per account, in a directory (``~/.datagora/keys`` unless told
otherwise), written atomically with mode 0600. No secret and no password ever
appears in a ``repr``, an exception message or any file other than the encrypted
keystore.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import umbral_pre
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_hex_address, to_checksum_address

from datagora.crypto.errors import (
    AccountExists,
    BadPrivateKey,
    CorruptKeystore,
    KeystoreError,
    UnknownAccount,
    WrongPassword,
)

__all__ = [
    "CONSUMER_KEY_HKDF_INFO",
    "CONSUMER_KEY_LABEL",
    "CONSUMER_KEY_PURPOSE",
    "DEFAULT_KEYS_DIR",
    "DEFAULT_SCRYPT_N",
    "DELEGATION_FACTORY_LABEL",
    "DELEGATION_KEYS_FORMAT",
    "KEYSTORE_SUFFIX",
    "SIGNING_KEY_LABEL",
    "UMBRAL_HKDF_INFO",
    "UMBRAL_KEY_LABEL",
    "AccountInfo",
    "ConsumerKey",
    "DelegationKeys",
    "Identity",
    "PublicIdentity",
    "consumer_key_typed_data",
    "default_keys_dir",
    "export_public",
    "import_account",
    "list_accounts",
    "load_account",
    "new_account",
]

UMBRAL_HKDF_INFO: Final = b"datagora/umbral/v1"
"""HKDF ``info`` turning the Ethereum secret into the Umbral ``SecretKeyFactory`` seed."""

UMBRAL_KEY_LABEL: Final = b"datagora/umbral/account-key/v1"
"""Factory label of the account's Umbral key pair (wrapping, receiving re-encryptions)."""

SIGNING_KEY_LABEL: Final = b"datagora/umbral/signing-key/v1"
"""Factory label of the account's Umbral signing key (signs key fragments)."""

DELEGATION_FACTORY_LABEL: Final = b"datagora/umbral/delegation/v1"
"""Factory label of the sub-factory that derives one delegating key per scope."""

CONSUMER_KEY_PURPOSE: Final = "datagora consumer key v1: sign only on a datagora page or tool"
"""The ``purpose`` of the EIP-712 ``ConsumerKey`` message a wallet signs (``docs/sharing.md``)."""

CONSUMER_KEY_HKDF_INFO: Final = b"umbral consumer key v1"
"""HKDF ``info`` turning the ``ConsumerKey`` signature's r ‖ s into a factory seed."""

CONSUMER_KEY_LABEL: Final = b"datagora-consumer-v1"
"""Factory label of the consumer's Umbral key pair derived from a wallet signature."""

DEFAULT_SCRYPT_N: Final = 2**18
"""scrypt cost of new keystores: eth-account's and geth's default (~0.7 s, 256 MiB here)."""

KEYSTORE_SUFFIX: Final = ".json"
DEFAULT_KEYS_DIR: Final = Path("~/.datagora/keys")

_SECRET_SIZE: Final = 32
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_NAME_FIELD: Final = "datagora_name"


def _hkdf_seed(secret: bytes) -> bytes:
    # No salt: the derivation must be reproducible from the secret alone (one backup);
    # the secret is already uniformly random, which is what HKDF's salt would provide.
    return HKDF(
        algorithm=hashes.SHA256(),
        length=umbral_pre.SecretKeyFactory.seed_size(),
        salt=None,
        info=UMBRAL_HKDF_INFO,
    ).derive(secret)


def consumer_key_typed_data(account: str, chain_id: int) -> dict[str, Any]:
    """The EIP-712 typed data a wallet signs to derive its consumer key on ``chain_id``.

    The same object goes to ``eth_signTypedData_v4`` in a browser wallet; the domain
    has no ``verifyingContract``, so one key serves every deployment on the chain.
    """
    if isinstance(chain_id, bool) or not isinstance(chain_id, int) or chain_id <= 0:
        raise KeystoreError("a chain id is a positive integer")
    if not is_hex_address(account):
        raise KeystoreError("the account is not a 20-byte hex address")
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
            ],
            "ConsumerKey": [
                {"name": "purpose", "type": "string"},
                {"name": "account", "type": "address"},
            ],
        },
        "primaryType": "ConsumerKey",
        "domain": {"name": "datagora", "version": "1", "chainId": chain_id},
        "message": {"purpose": CONSUMER_KEY_PURPOSE, "account": to_checksum_address(account)},
    }


class ConsumerKey:
    """A consumer's Umbral key pair derived from a wallet's ``ConsumerKey`` signature.

    Orders and access requests carry its public key; proxies re-encrypt data keys to
    it. A browser wallet signs the same typed data (:func:`consumer_key_typed_data`)
    deterministically (RFC 6979), so the page and the CLI derive the same key without
    the wallet ever revealing its Ethereum secret.
    """

    __slots__ = ("_sk",)

    def __init__(self, secret: umbral_pre.SecretKey) -> None:
        self._sk = secret

    @classmethod
    def from_signature(cls, signature: bytes) -> ConsumerKey:
        """The key of a 65-byte ``r ‖ s ‖ v`` signature of the ``ConsumerKey`` message."""
        if not isinstance(signature, bytes | bytearray) or len(signature) != 65:
            raise KeystoreError("a ConsumerKey signature is 65 bytes (r ‖ s ‖ v)")
        seed = HKDF(
            algorithm=hashes.SHA256(),
            length=umbral_pre.SecretKeyFactory.seed_size(),
            salt=b"datagora",
            info=CONSUMER_KEY_HKDF_INFO,
        ).derive(bytes(signature[:64]))
        factory = umbral_pre.SecretKeyFactory.from_secure_randomness(seed)
        return cls(factory.make_key(CONSUMER_KEY_LABEL))

    @property
    def public_key(self) -> bytes:
        """The compressed Umbral public key (33 bytes) that orders carry."""
        return bytes(self._sk.public_key().to_compressed_bytes())

    def umbral_secret_key(self) -> umbral_pre.SecretKey:
        """The Umbral secret key (receives re-encryptions; keep it in memory only)."""
        return self._sk

    def __repr__(self) -> str:
        return f"ConsumerKey(public_key={self.public_key.hex()})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("a ConsumerKey holds a secret and cannot be pickled")


class Identity:
    """An account with its secrets: the Ethereum key, its Umbral key pair and signing key.

    Build one with :meth:`from_private_key`, :meth:`generate` or :func:`load_account`.
    ``repr`` and ``str`` show only the address.
    """

    __slots__ = ("_account", "_consumer", "_delegation", "_signing_sk", "_umbral_sk")

    def __init__(self, account: LocalAccount) -> None:
        secret = bytes(account.key)
        factory = umbral_pre.SecretKeyFactory.from_secure_randomness(_hkdf_seed(secret))
        self._account = account
        self._umbral_sk = factory.make_key(UMBRAL_KEY_LABEL)
        self._signing_sk = factory.make_key(SIGNING_KEY_LABEL)
        self._delegation = factory.make_factory(DELEGATION_FACTORY_LABEL)
        self._consumer: dict[int, ConsumerKey] = {}

    def consumer_key(self, chain_id: int) -> ConsumerKey:
        """The account's consumer key on ``chain_id``: derived from its signature of the
        ``ConsumerKey`` message exactly as a browser wallet's (``docs/sharing.md``)."""
        key = self._consumer.get(chain_id)
        if key is None:
            typed = consumer_key_typed_data(self.address, chain_id)
            signed = self._account.sign_message(encode_typed_data(full_message=typed))
            key = ConsumerKey.from_signature(bytes(signed.signature))
            self._consumer[chain_id] = key
        return key

    def delegation_keys(self) -> DelegationKeys:
        """The account's Umbral delegation secrets without its Ethereum key (for an agent)."""
        return DelegationKeys(
            self.address,
            _hkdf_factory_seed(_hkdf_seed(bytes(self._account.key)), DELEGATION_FACTORY_LABEL),
            bytes(self._signing_sk.to_be_bytes()),
        )

    @classmethod
    def from_private_key(cls, private_key: str | bytes) -> Identity:
        """The identity of a 32-byte secp256k1 secret, given as bytes or hex (``0x`` optional).

        Raises :class:`BadPrivateKey` if it is not one; the message never repeats it.
        """
        return cls(Account.from_key(_parse_private_key(private_key)))

    @classmethod
    def generate(cls) -> Identity:
        """A new identity from the operating system's random generator."""
        while True:
            candidate = secrets.token_bytes(_SECRET_SIZE)
            # About 2**-128 of 32-byte strings are not valid secrets (0 or ≥ the curve order).
            try:
                return cls.from_private_key(candidate)
            except BadPrivateKey:
                continue

    @property
    def account(self) -> LocalAccount:
        """The eth-account signer, for transactions and EIP-712 signatures."""
        return self._account

    @property
    def address(self) -> str:
        """The EIP-55 checksummed Ethereum address."""
        return str(self._account.address)

    @property
    def umbral_public_key(self) -> bytes:
        """The account's Umbral public key, compressed (33 bytes)."""
        return bytes(self._umbral_sk.public_key().to_compressed_bytes())

    @property
    def verifying_key(self) -> bytes:
        """The public key of the Umbral signing key, compressed (33 bytes)."""
        return bytes(self._signing_sk.public_key().to_compressed_bytes())

    def umbral_secret_key(self) -> umbral_pre.SecretKey:
        """The account's Umbral secret key (for decryption; keep it in memory only)."""
        return self._umbral_sk

    def umbral_signer(self) -> umbral_pre.Signer:
        """An Umbral signer over the account's signing key (signs key fragments)."""
        return umbral_pre.Signer(self._signing_sk)

    def delegating_secret_key(self, scope: bytes) -> umbral_pre.SecretKey:
        """The Umbral key that data keys of ``scope`` are wrapped to.

        The empty scope is the account key itself; any other scope (for example one
        dataset version) gets its own key, so key fragments made for one scope cannot
        re-encrypt capsules of another.
        """
        if not scope:
            return self._umbral_sk
        return self._delegation.make_key(scope)

    def delegating_public_key(self, scope: bytes) -> bytes:
        """The compressed public key of :meth:`delegating_secret_key` (33 bytes)."""
        return bytes(self.delegating_secret_key(scope).public_key().to_compressed_bytes())

    def __repr__(self) -> str:
        return f"Identity(address={self.address})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling would copy the secret into whatever stores the pickle.
        raise TypeError("an Identity holds secrets and cannot be pickled; save a keystore")


def _hkdf_factory_seed(seed: bytes, label: bytes) -> bytes:
    # umbral-pre's SecretKeyFactory.make_factory(label), computed so the seed can be
    # handed on (tests check the two agree).
    return HKDF(
        algorithm=hashes.SHA256(),
        length=umbral_pre.SecretKeyFactory.seed_size(),
        salt=None,
        info=b"FACTORY_DERIVATION/" + label,
    ).derive(seed)


DELEGATION_KEYS_FORMAT: Final = "datagora.delegation-keys.v1"


class DelegationKeys:
    """An owner's Umbral delegation secrets, without its Ethereum key: what its agent holds.

    The delegation factory seed derives the owner's delegating key of every dataset
    version (so whoever holds it can make key fragments and open those versions' data
    keys); the signing key signs the fragments. Neither moves the owner's NFTs or
    funds, and proxies accept fragments only from the owner or an agent key the owner
    authorised on chain (``AccessRegistry.set_delegate``). The owner hands them to its
    agent sealed to the agent account's Umbral key (:meth:`seal`, :meth:`open`).
    """

    __slots__ = ("_factory", "_seed", "_signing_sk", "owner")

    def __init__(self, owner: str, factory_seed: bytes, signing_key: bytes) -> None:
        if len(factory_seed) != 32 or len(signing_key) != 32:
            raise KeystoreError("delegation keys are a 32-byte seed and a 32-byte signing key")
        self.owner = to_checksum_address(owner)
        self._seed = bytes(factory_seed)
        self._factory = umbral_pre.SecretKeyFactory.from_secure_randomness(self._seed)
        try:
            self._signing_sk = umbral_pre.SecretKey.from_be_bytes(bytes(signing_key))
        except ValueError:
            raise KeystoreError("the delegation signing key is not a valid scalar") from None

    @property
    def address(self) -> str:
        """The owner's address (whose datasets these keys delegate)."""
        return self.owner

    @property
    def verifying_key(self) -> bytes:
        return bytes(self._signing_sk.public_key().to_compressed_bytes())

    def umbral_signer(self) -> umbral_pre.Signer:
        return umbral_pre.Signer(self._signing_sk)

    def delegating_secret_key(self, scope: bytes) -> umbral_pre.SecretKey:
        if not scope:
            raise KeystoreError("an agent delegates dataset versions, never the account key")
        return self._factory.make_key(scope)

    def delegating_public_key(self, scope: bytes) -> bytes:
        return bytes(self.delegating_secret_key(scope).public_key().to_compressed_bytes())

    def seal(self, agent_umbral_key: bytes) -> dict[str, str]:
        """The keys encrypted to the agent account's Umbral public key (a JSON record
        that holds nothing readable without the agent's keystore)."""
        capsule, ciphertext = umbral_pre.encrypt(
            umbral_pre.PublicKey.from_compressed_bytes(agent_umbral_key),
            self._seed + bytes(self._signing_sk.to_be_bytes()),
        )
        return {
            "format": DELEGATION_KEYS_FORMAT,
            "owner": self.owner,
            "agent_key": agent_umbral_key.hex(),
            "verifying_key": self.verifying_key.hex(),
            "capsule": bytes(capsule).hex(),
            "ciphertext": bytes(ciphertext).hex(),
        }

    @classmethod
    def open(cls, record: Mapping[str, Any], agent: Identity) -> DelegationKeys:
        """Open a record made by :meth:`seal` with the agent's identity."""
        try:
            if record["format"] != DELEGATION_KEYS_FORMAT:
                raise KeystoreError(f"not a {DELEGATION_KEYS_FORMAT} record")
            if bytes.fromhex(record["agent_key"]) != agent.umbral_public_key:
                raise KeystoreError(
                    f"these delegation keys are sealed to another agent, not {agent.address}"
                )
            capsule = umbral_pre.Capsule.from_bytes(bytes.fromhex(record["capsule"]))
            plain = umbral_pre.decrypt_original(
                agent.umbral_secret_key(), capsule, bytes.fromhex(record["ciphertext"])
            )
            keys = cls(record["owner"], bytes(plain[:32]), bytes(plain[32:]))
        except (KeyError, TypeError, ValueError) as exc:
            raise KeystoreError(f"invalid delegation keys record ({type(exc).__name__})") from None
        if keys.verifying_key.hex() != record["verifying_key"]:
            raise KeystoreError("the delegation keys do not match their verifying key")
        return keys

    def __repr__(self) -> str:
        return f"DelegationKeys(owner={self.owner})"

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("DelegationKeys hold secrets and cannot be pickled; seal them")


@dataclass(frozen=True, slots=True)
class PublicIdentity:
    """What others need to share with an account and verify what it signs."""

    address: str
    umbral_public_key: bytes
    verifying_key: bytes

    def to_json(self) -> dict[str, str]:
        """The public-key record (see ``docs/sharing.md``)."""
        return {
            "format": "datagora.public-identity.v1",
            "address": self.address,
            "umbral_public_key": self.umbral_public_key.hex(),
            "verifying_key": self.verifying_key.hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PublicIdentity:
        """Parse and check a record made by :meth:`to_json`; raises :class:`KeystoreError`."""
        try:
            if data["format"] != "datagora.public-identity.v1":
                raise KeystoreError(f"unsupported public identity format {data['format']!r}")
            address = data["address"]
            if not isinstance(address, str) or not is_hex_address(address):
                raise KeystoreError("public identity has an invalid address")
            keys = []
            for field in ("umbral_public_key", "verifying_key"):
                raw = bytes.fromhex(data[field])
                umbral_pre.PublicKey.from_compressed_bytes(raw)
                keys.append(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise KeystoreError(f"invalid public identity record: {exc}") from None
        return cls(to_checksum_address(address), keys[0], keys[1])


def export_public(identity: Identity) -> dict[str, str]:
    """The account's public record: address, Umbral public key and verifying key (hex)."""
    return PublicIdentity(
        identity.address, identity.umbral_public_key, identity.verifying_key
    ).to_json()


def _parse_private_key(private_key: str | bytes) -> bytes:
    if isinstance(private_key, str):
        text = private_key.strip()
        text = text[2:] if text[:2].lower() == "0x" else text
        if len(text) != 2 * _SECRET_SIZE or not re.fullmatch(r"[0-9a-fA-F]*", text):
            raise BadPrivateKey("a private key is 64 hex digits (32 bytes), optionally after 0x")
        raw = bytes.fromhex(text)
    elif isinstance(private_key, bytes | bytearray):
        raw = bytes(private_key)
        if len(raw) != _SECRET_SIZE:
            raise BadPrivateKey("a private key is 32 bytes")
    else:
        raise BadPrivateKey("a private key is given as hex text or bytes")
    order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    if not 0 < int.from_bytes(raw, "big") < order:
        raise BadPrivateKey("the private key is out of range for secp256k1 (0 or ≥ the order)")
    return raw


# ---------------------------------------------------------------- keystores


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """One keystore in a directory, read without decrypting it."""

    address: str
    name: str | None
    file: Path


def default_keys_dir() -> Path:
    """``$DATAGORA_KEYS_DIR`` if set, else ``~/.datagora/keys``."""
    return Path(os.environ.get("DATAGORA_KEYS_DIR") or DEFAULT_KEYS_DIR).expanduser()


def new_account(
    directory: Path | str | None,
    password: str,
    name: str | None = None,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> Identity:
    """Create a random account and save it as a keystore in ``directory``.

    ``directory=None`` means :func:`default_keys_dir`. ``scrypt_n`` is the keystore's
    scrypt cost (a power of two); lower it only for tests.
    """
    return _save(_keys_dir(directory), Identity.generate(), password, name, scrypt_n)


def import_account(
    directory: Path | str | None,
    private_key_hex: str,
    password: str,
    name: str | None = None,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
) -> Identity:
    """Save an existing Ethereum private key (hex, ``0x`` optional) as a keystore.

    Raises :class:`BadPrivateKey` for a malformed key and :class:`AccountExists` if
    the address or the name is already in the directory.
    """
    identity = Identity.from_private_key(private_key_hex)
    return _save(_keys_dir(directory), identity, password, name, scrypt_n)


def list_accounts(directory: Path | str | None = None) -> list[AccountInfo]:
    """Every keystore in ``directory``, sorted by name then address; nothing is decrypted.

    A missing directory lists nothing. Raises :class:`CorruptKeystore` naming any file
    that is not a keystore, so it is never silently ignored.
    """
    folder = _keys_dir(directory)
    if not folder.is_dir():
        return []
    infos = [_read_info(path) for path in sorted(folder.glob("*" + KEYSTORE_SUFFIX))]
    return sorted(infos, key=lambda i: (i.name is None, i.name or "", i.address))


def load_account(directory: Path | str | None, address_or_name: str, password: str) -> Identity:
    """Open the keystore of ``address_or_name`` with ``password``.

    Raises :class:`UnknownAccount`, :class:`WrongPassword` or :class:`CorruptKeystore`.
    """
    info = _find(list_accounts(directory), address_or_name)
    if info is None:
        raise UnknownAccount(
            f"no account {address_or_name!r} in {_keys_dir(directory)}; "
            "`datagora account list` shows the accounts there"
        )
    keystore = _read_json(info.file)
    try:
        secret = Account.decrypt(keystore, password)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPassword(f"wrong password for account {info.address}") from None
        raise CorruptKeystore(f"{info.file} cannot be decrypted: it is damaged") from None
    except (KeyError, TypeError):
        raise CorruptKeystore(f"{info.file} is missing keystore fields") from None
    identity = Identity.from_private_key(bytes(secret))
    if identity.address != info.address:
        raise CorruptKeystore(f"{info.file} decrypts to another address than it names")
    return identity


def _keys_dir(directory: Path | str | None) -> Path:
    return default_keys_dir() if directory is None else Path(directory).expanduser()


def _check_name(name: str | None) -> None:
    if name is None:
        return
    if not _NAME_RE.fullmatch(name):
        raise KeystoreError(
            "an account name is 1–64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    if is_hex_address(name):
        raise KeystoreError("an account name must not look like an address")


def _find(infos: list[AccountInfo], address_or_name: str) -> AccountInfo | None:
    if is_hex_address(address_or_name):
        wanted = address_or_name.lower()
        return next((i for i in infos if i.address.lower() == wanted), None)
    return next((i for i in infos if i.name == address_or_name), None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CorruptKeystore(
            f"{path} is not readable keystore JSON ({exc.__class__.__name__})"
        ) from None
    if not isinstance(data, dict):
        raise CorruptKeystore(f"{path} is not a keystore object")
    return data


def _read_info(path: Path) -> AccountInfo:
    data = _read_json(path)
    address = data.get("address")
    if (
        data.get("version") != 3
        or not isinstance(data.get("crypto"), dict)
        or not isinstance(address, str)
        or not is_hex_address(address)
    ):
        raise CorruptKeystore(f"{path} is not an Ethereum keystore v3 file")
    name = data.get(_NAME_FIELD)
    if name is not None and not isinstance(name, str):
        raise CorruptKeystore(f"{path} has an invalid account name")
    return AccountInfo(to_checksum_address(address), name, path)


def _save(
    folder: Path, identity: Identity, password: str, name: str | None, scrypt_n: int
) -> Identity:
    _check_name(name)
    if not isinstance(password, str) or not password:
        raise KeystoreError("a keystore needs a non-empty password")
    if scrypt_n < 2 or scrypt_n & (scrypt_n - 1):
        raise KeystoreError("scrypt_n must be a power of two")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = list_accounts(folder)
    if _find(existing, identity.address) is not None:
        raise AccountExists(f"account {identity.address} already has a keystore in {folder}")
    if name is not None and _find(existing, name) is not None:
        raise AccountExists(f"an account named {name!r} already exists in {folder}")
    keystore = dict(
        Account.encrypt(identity.account.key, password, kdf="scrypt", iterations=scrypt_n)
    )
    keystore["address"] = identity.address.lower().removeprefix("0x")
    if name is not None:
        keystore[_NAME_FIELD] = name
    target = folder / f"{identity.address}{KEYSTORE_SUFFIX}"
    _write_new_file(target, json.dumps(keystore, indent=2, sort_keys=True).encode() + b"\n")
    return identity


def _write_new_file(target: Path, data: bytes) -> None:
    """Write ``target`` whole or not at all, mode 0600, never replacing an existing file."""
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        # mkstemp already creates 0600; chmod again in case of an unusual umask policy.
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # link, unlike rename, refuses to replace a file another process just wrote.
            os.link(tmp, target)
        except FileExistsError:
            raise AccountExists(f"{target} already exists") from None
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
