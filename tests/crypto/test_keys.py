"""Account identity: key derivation, keystore directory, and keeping secrets out of sight."""

from __future__ import annotations

import json
import pickle
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from datagora.crypto.errors import (
    AccountExists,
    BadPrivateKey,
    CorruptKeystore,
    KeystoreError,
    UnknownAccount,
    WrongPassword,
)
from datagora.crypto.keys import (
    UMBRAL_HKDF_INFO,
    Identity,
    PublicIdentity,
    export_public,
    import_account,
    list_accounts,
    load_account,
    new_account,
)
from datagora.crypto.pre import dataset_scope
from datagora.errors import DatagoraError

# A well-known test key (eth-account's documentation); its derived keys are pinned below
# and in docs/sharing.md, so a change in the derivation or in umbral-pre is caught.
VECTOR_KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
VECTOR = {
    "address": "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
    "hkdf_seed": "99a4797aed7b118ab5192d6546ea7e7e7072f906c2d60c111b692c950a15850c",
    "umbral_public_key": "024c77a700f8423be502b5ec2c59ef979c024ff1b0e7e820e705f371205f0c1b98",
    "verifying_key": "02634433764f05245c492ac21378e62870c5fba480c62fed05febca15029687dbb",
    "scope_7_1": "028c0cc1e82227bc3ae93a1753bfad1b9ccf37308fbd1e0a09428274daf4b8fa82",
}
PASSWORD = "correct horse battery staple"
FAST = 2**4  # scrypt cost for tests only; real keystores use DEFAULT_SCRYPT_N

secrets_32 = st.integers(min_value=1, max_value=2**255).map(lambda n: n.to_bytes(32, "big"))


def test_derivation_matches_the_pinned_vector() -> None:
    identity = Identity.from_private_key(VECTOR_KEY)
    seed = HKDF(hashes.SHA256(), 32, None, UMBRAL_HKDF_INFO).derive(bytes.fromhex(VECTOR_KEY[2:]))
    assert seed.hex() == VECTOR["hkdf_seed"]
    assert identity.address == VECTOR["address"]
    assert identity.umbral_public_key.hex() == VECTOR["umbral_public_key"]
    assert identity.verifying_key.hex() == VECTOR["verifying_key"]
    assert identity.delegating_public_key(dataset_scope(7, 1)).hex() == VECTOR["scope_7_1"]
    assert identity.delegating_public_key(b"") == identity.umbral_public_key


@settings(max_examples=25, deadline=None)
@given(secret=secrets_32)
def test_derivation_is_deterministic_and_keys_are_distinct(secret: bytes) -> None:
    first, again = Identity.from_private_key(secret), Identity.from_private_key(secret.hex())
    assert first.address == again.address
    assert first.umbral_public_key == again.umbral_public_key
    assert first.verifying_key == again.verifying_key
    keys = {
        first.umbral_public_key,
        first.verifying_key,
        first.delegating_public_key(b"a"),
        first.delegating_public_key(b"b"),
    }
    assert len(keys) == 4 and all(len(k) == 33 for k in keys)
    # The Umbral keys are not the Ethereum key reused on the same curve.
    eth_public = Account.from_key(secret)._key_obj.public_key.to_compressed_bytes()
    assert eth_public not in keys


@settings(max_examples=25, deadline=None)
@given(a=secrets_32, b=secrets_32)
def test_distinct_accounts_get_distinct_keys(a: bytes, b: bytes) -> None:
    if a == b:
        return
    first, second = Identity.from_private_key(a), Identity.from_private_key(b)
    assert first.umbral_public_key != second.umbral_public_key
    assert first.verifying_key != second.verifying_key
    assert first.delegating_public_key(b"s") != second.delegating_public_key(b"s")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "0x",
        "0x1234",
        "zz" * 32,
        "0x" + "00" * 32,
        "0x" + "ff" * 32,  # above the secp256k1 order
        b"\x01" * 31,
        12345,
    ],
)
def test_bad_private_keys_are_refused_without_echoing_them(bad: object) -> None:
    with pytest.raises(BadPrivateKey) as info:
        Identity.from_private_key(bad)  # type: ignore[arg-type]
    if isinstance(bad, str) and len(bad) > 4:
        assert bad not in str(info.value) and bad.removeprefix("0x") not in str(info.value)


def test_generate_gives_fresh_accounts() -> None:
    assert Identity.generate().address != Identity.generate().address


def test_repr_str_and_pickle_hide_the_secret() -> None:
    identity = Identity.from_private_key(VECTOR_KEY)
    secret_hex = VECTOR_KEY[2:]
    for text in (repr(identity), str(identity), f"{identity}"):
        assert text == f"Identity(address={VECTOR['address']})"
        assert secret_hex not in text.lower()
    with pytest.raises(TypeError):
        pickle.dumps(identity)


def test_export_public_round_trips_and_holds_no_secret() -> None:
    identity = Identity.from_private_key(VECTOR_KEY)
    record = export_public(identity)
    assert record == {
        "format": "datagora.public-identity.v1",
        "address": VECTOR["address"],
        "umbral_public_key": VECTOR["umbral_public_key"],
        "verifying_key": VECTOR["verifying_key"],
    }
    assert VECTOR_KEY[2:] not in json.dumps(record)
    parsed = PublicIdentity.from_json(json.loads(json.dumps(record)))
    assert parsed.umbral_public_key == identity.umbral_public_key
    with pytest.raises(KeystoreError):
        PublicIdentity.from_json({**record, "umbral_public_key": "02" + "00" * 32})
    with pytest.raises(KeystoreError):
        PublicIdentity.from_json({**record, "address": "0x1234"})


def test_keystore_round_trip_mode_and_listing(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    alice = new_account(keys, PASSWORD, "alice", scrypt_n=FAST)
    imported = import_account(keys, VECTOR_KEY, PASSWORD, scrypt_n=FAST)
    assert imported.address == VECTOR["address"]

    listed = list_accounts(keys)
    assert [(i.address, i.name) for i in listed] == [
        (alice.address, "alice"),
        (VECTOR["address"], None),
    ]
    for info in listed:
        assert stat.S_IMODE(info.file.stat().st_mode) == 0o600
        keystore = json.loads(info.file.read_text())
        assert keystore["version"] == 3
        # Any Ethereum tool opens it.
        assert Account.from_key(Account.decrypt(keystore, PASSWORD)).address == info.address
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert not [p for p in keys.iterdir() if p.suffix != ".json"]  # no temp file left

    by_name = load_account(keys, "alice", PASSWORD)
    by_address = load_account(keys, alice.address.lower(), PASSWORD)
    assert by_name.umbral_public_key == by_address.umbral_public_key == alice.umbral_public_key
    assert by_name.verifying_key == alice.verifying_key
    assert load_account(keys, VECTOR["address"], PASSWORD).umbral_public_key == bytes.fromhex(
        VECTOR["umbral_public_key"]
    )


def test_wrong_password_unknown_and_duplicates(tmp_path: Path) -> None:
    alice = new_account(tmp_path, PASSWORD, "alice", scrypt_n=FAST)
    with pytest.raises(WrongPassword) as wrong:
        load_account(tmp_path, "alice", "not the password")
    assert "not the password" not in str(wrong.value)
    with pytest.raises(UnknownAccount):
        load_account(tmp_path, "bob", PASSWORD)
    with pytest.raises(UnknownAccount):
        load_account(tmp_path, "0x" + "12" * 20, PASSWORD)
    with pytest.raises(AccountExists):
        new_account(tmp_path, PASSWORD, "alice", scrypt_n=FAST)
    secret = Identity.generate()
    import_account(tmp_path, secret.account.key.hex(), PASSWORD, "carol", scrypt_n=FAST)
    with pytest.raises(AccountExists):
        import_account(tmp_path, secret.account.key.hex(), "other", "dave", scrypt_n=FAST)
    assert len(list_accounts(tmp_path)) == 2
    assert load_account(tmp_path, "alice", PASSWORD).address == alice.address


@pytest.mark.parametrize(
    ("name", "password"),
    [("has space", PASSWORD), ("0x" + "ab" * 20, PASSWORD), ("-x", PASSWORD), ("ok", "")],
)
def test_bad_names_and_empty_password_are_refused(tmp_path: Path, name: str, password: str) -> None:
    with pytest.raises(KeystoreError):
        new_account(tmp_path, password, name, scrypt_n=FAST)
    assert list_accounts(tmp_path) == []


def test_bad_private_key_import_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(BadPrivateKey):
        import_account(tmp_path, "0xnot-a-key", PASSWORD, scrypt_n=FAST)
    assert list_accounts(tmp_path) == []


def test_corrupt_keystores_are_named(tmp_path: Path) -> None:
    alice = new_account(tmp_path, PASSWORD, "alice", scrypt_n=FAST)
    (path,) = tmp_path.glob("*.json")

    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(CorruptKeystore, match=r"junk\.json"):
        list_accounts(tmp_path)
    (tmp_path / "junk.json").write_text(json.dumps({"version": 2}))
    with pytest.raises(CorruptKeystore, match=r"junk\.json"):
        list_accounts(tmp_path)
    (tmp_path / "junk.json").unlink()

    keystore = json.loads(path.read_text())
    keystore["crypto"]["ciphertext"] = "zz"
    path.write_text(json.dumps(keystore))
    with pytest.raises(CorruptKeystore):
        load_account(tmp_path, "alice", PASSWORD)

    # A keystore relabelled with another address must not open as that address.
    other = Identity.generate()
    keystore = dict(Account.encrypt(other.account.key, PASSWORD, kdf="scrypt", iterations=FAST))
    keystore["address"] = alice.address[2:].lower()
    keystore["datagora_name"] = "alice"
    path.write_text(json.dumps(keystore))
    with pytest.raises(CorruptKeystore, match="another address"):
        load_account(tmp_path, "alice", PASSWORD)


def test_no_secret_or_password_outside_the_encrypted_keystore(tmp_path: Path) -> None:
    identity = import_account(tmp_path, VECTOR_KEY, PASSWORD, "v", scrypt_n=FAST)
    secrets = [
        VECTOR_KEY[2:],
        PASSWORD,
        bytes(identity.umbral_secret_key().to_be_bytes()).hex(),
        VECTOR["hkdf_seed"],
    ]
    everything = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for secret in secrets:
        assert secret.lower().encode() not in everything.lower()
    for raw in (bytes.fromhex(s) for s in secrets if s != PASSWORD):
        assert raw not in everything

    messages = []
    calls: list[Callable[[], object]] = [
        lambda: load_account(tmp_path, "v", "wrong " + PASSWORD),
        lambda: import_account(tmp_path, VECTOR_KEY, PASSWORD, scrypt_n=FAST),
        lambda: Identity.from_private_key(VECTOR_KEY[:-2]),
    ]
    for call in calls:
        with pytest.raises(DatagoraError) as info:
            call()
        messages.append(f"{info.value!s} {info.value!r}")
    for message in messages:
        for secret in secrets:
            assert secret not in message
            assert secret[:-2] not in message


def test_missing_directory_lists_nothing(tmp_path: Path) -> None:
    assert list_accounts(tmp_path / "absent") == []


# ---------------------------------------------------------------- wallet-derived consumer key

DEV_KEY = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
CONSUMER_KEY_31337 = "02448b1902f3b55a8a464c4f0fd6cc428b50ff96c1f546c6e45b8652238a94b64a"
CONSUMER_SIGNATURE_31337 = (
    "42c2db3774c15bb381c2bb9227b1c7558c193c61887b6d8391346c100ab4af5f"
    "53da12138155c0fd133d7825e652d34289ed4f022c25f42b130da4e28b12d64d1c"
)


def test_the_consumer_key_test_vector() -> None:
    """docs/sharing.md's vector: the web page's JS must derive the same public key."""
    from datagora.crypto.keys import ConsumerKey, consumer_key_typed_data

    identity = Identity.from_private_key(DEV_KEY)
    typed = consumer_key_typed_data(identity.address, 31337)
    assert typed["message"] == {
        "purpose": "datagora consumer key v1: sign only on a datagora page or tool",
        "account": "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23",
    }
    # What a wallet's eth_signTypedData_v4 returns, made here by another eth-account path.
    signature = bytes(Account.sign_typed_data(bytes.fromhex(DEV_KEY), full_message=typed).signature)
    assert signature.hex() == CONSUMER_SIGNATURE_31337
    assert ConsumerKey.from_signature(signature).public_key.hex() == CONSUMER_KEY_31337
    assert identity.consumer_key(31337).public_key.hex() == CONSUMER_KEY_31337
    # Another chain, another key; never the account's own Umbral key.
    assert identity.consumer_key(1).public_key.hex() != CONSUMER_KEY_31337
    assert identity.consumer_key(31337).public_key != identity.umbral_public_key
    assert "secret" not in repr(identity.consumer_key(31337)).lower()


def test_delegation_keys_are_the_owners_and_open_only_for_their_agent() -> None:
    from datagora.crypto.keys import DelegationKeys

    owner, agent, other = Identity.generate(), Identity.generate(), Identity.generate()
    keys = owner.delegation_keys()
    scope = dataset_scope(7, 1)
    assert keys.delegating_public_key(scope) == owner.delegating_public_key(scope)
    assert keys.verifying_key == owner.verifying_key and keys.owner == owner.address
    sealed = keys.seal(agent.umbral_public_key)
    assert bytes(owner.account.key).hex() not in str(sealed)
    opened = DelegationKeys.open(sealed, agent)
    assert opened.delegating_public_key(scope) == owner.delegating_public_key(scope)
    with pytest.raises(KeystoreError):
        DelegationKeys.open(sealed, other)
    with pytest.raises(KeystoreError):
        keys.delegating_secret_key(b"")  # the account key itself is not the agent's
