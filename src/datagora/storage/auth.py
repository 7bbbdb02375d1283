"""Who may write to a storage node: signed writes, replay protection and byte quotas.

Every request that stores something on a node (``PUT /shares``, ``PUT
/shares/{name}``, ``PUT /placements/{name}``) carries a
``datagora.signed-request.v1`` :class:`StorageWrite` in the ``x-datagora-write``
header (base64 of its JSON): an EIP-712 message signed by the writing account
that names the node (its base URL), the method, the path, the body's content
digest and size, a random nonce and an expiry. The content digest is the SHA-256
of the body for a single blob (its name: the node checks the body hashes to
it), and for a batch the SHA-256 of the frame's index (every entry's 32-byte
name and 4-byte length, in order: the node checks each entry against its name),
so neither side hashes a batch twice. Reads stay open.

A node accepts a write only from an account with a byte quota on it
(:class:`QuotaBook`: what the operator granted with ``datagora node quota
grant``, plus what any :class:`QuotaSource`, e.g. a paid storage deal, grants),
and only while the bytes it would newly store fit in what is left. Refusals:
401 (no or bad signature, another node, expired, replayed), 403 (no quota),
413 (over quota), each with a reason, and nothing stored. The schema is in
``docs/formats.md`` ("Signed storage writes").
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Final, Protocol

from coincurve import PrivateKey
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_hex_address

from datagora.crypto.eip712 import (
    Request,
    SignedRequest,
    eip712_digest,
    new_nonce,
    register_request,
    to_checksum_address,
    verify_request,
)
from datagora.crypto.errors import MalformedRequest, RequestRefused
from datagora.crypto.nonces import NonceStore
from datagora.storage.errors import StorageError, WriteRefused

__all__ = [
    "AUTH_HEADER",
    "DEFAULT_CHAIN_ID",
    "WRITE_LIFETIME_S",
    "Controllers",
    "QuotaBook",
    "QuotaSource",
    "StorageWrite",
    "WritePolicy",
    "WriteRefused",
    "WriteSigner",
    "frame_index_digest",
]

AUTH_HEADER: Final = "x-datagora-write"
SCHEME: Final = "datagora.storage-write.v1"
DEFAULT_CHAIN_ID: Final = 31337
"""The chain id a node without a ledger signs requests under (anvil's)."""
WRITE_LIFETIME_S: Final = 120
_MAX_HEADER: Final = 4096


@register_request
@dataclass(frozen=True, slots=True)
class StorageWrite(Request):
    """An account asks one storage node to store a body (see the module docstring)."""

    PRIMARY_TYPE: ClassVar[str] = "StorageWrite"
    SIGNER: ClassVar[str] = "writer"
    FIELDS: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("writer", "writer", "address"),
        ("node", "node", "string"),
        ("method", "method", "string"),
        ("path", "path", "string"),
        ("content", "content", "bytes32"),
        ("size", "size", "uint64"),
        ("nonce", "nonce", "bytes32"),
        ("expires", "expires", "uint64"),
    )

    writer: str
    node: str
    method: str
    path: str
    content: bytes
    size: int
    nonce: bytes
    expires: int


def frame_index_digest(entries: Iterable[tuple[bytes, int]]) -> bytes:
    """The content digest of a batch: SHA-256 over each entry's name and u32 length."""
    h = hashlib.sha256()
    for name, length in entries:
        h.update(name + length.to_bytes(4, "big"))
    return h.digest()


class WriteSigner:
    """Signs one account's writes to storage nodes (the client side)."""

    def __init__(self, account: LocalAccount, lifetime: int = WRITE_LIFETIME_S) -> None:
        self.account = account
        self.lifetime = lifetime
        # A write is signed per batch: sign the EIP-712 digest directly (libsecp256k1,
        # deterministic, low-s), a fraction of eth-account's generic encoder's cost.
        self._key = PrivateKey(bytes(account.key))

    @property
    def address(self) -> str:
        return str(self.account.address)

    def header(
        self, node: str, method: str, path: str, content: bytes, size: int, chain_id: int
    ) -> dict[str, str]:
        """The ``x-datagora-write`` header of one request."""
        request = StorageWrite(
            self.address,
            node,
            method,
            path,
            content,
            size,
            new_nonce(),
            int(time.time()) + self.lifetime,
        )
        recoverable = self._key.sign_recoverable(eip712_digest(request, chain_id), hasher=None)
        signature = recoverable[:64] + bytes([recoverable[64] + 27])
        signed = SignedRequest(request, chain_id, None, signature)
        raw = json.dumps(signed.to_json(), separators=(",", ":")).encode()
        return {AUTH_HEADER: base64.b64encode(raw).decode("ascii")}


class QuotaSource(Protocol):
    """Another authority that grants bytes on this node (e.g. a paid storage deal).

    ``granted`` is called on every write by ``account``; it returns the bytes it
    grants (0 for none), on top of the operator's grant. Keep it cheap (cache).
    """

    def granted(self, account: str) -> int: ...


class Controllers(Protocol):
    """Who controls the dataset version a manifest belongs to (the ledger's view)."""

    def may_control(self, manifest_hash: bytes, account: str) -> bool | None:
        """True if ``account`` controls the dataset whose version ``manifest_hash`` is
        (its data NFT's holder or an operator it approved), False if not, None if the
        chain records no dataset version with that manifest (not yet published)."""
        ...


def check_account(account: str) -> str:
    """``account`` in checksummed form; :class:`StorageError` if it is not an address."""
    if not isinstance(account, str) or not is_hex_address(account):
        raise StorageError(f"{account!r} is not an Ethereum account (0x and 40 hex digits)")
    return to_checksum_address(account)


@dataclass(frozen=True)
class QuotaEntry:
    """One account's quota on a node: granted by the operator, used so far."""

    account: str
    granted: int
    used: int


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS grants (account TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage (account TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS charges (
    name BLOB PRIMARY KEY, account TEXT NOT NULL, bytes INTEGER NOT NULL
);
"""


class QuotaBook:
    """Per-account byte quotas of one node, in SQLite (``quotas.sqlite`` in its data
    directory): the operator's grants, the bytes each account stored, and the bytes
    reserved by writes under way. Shared safely by the node and ``datagora node
    quota`` (a grant takes effect at the next write)."""

    FILE: ClassVar[str] = "quotas.sqlite"

    def __init__(self, path: Path, sources: Sequence[QuotaSource] = ()) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sources = list(sources)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL sync: a power cut may lose the last usage updates (a
        # process crash loses nothing), not worth a disk sync per write request.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._reserved: dict[str, int] = {}

    @classmethod
    def in_dir(cls, data_dir: Path, sources: Sequence[QuotaSource] = ()) -> QuotaBook:
        return cls(data_dir / cls.FILE, sources)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def grant(self, account: str, amount: int) -> None:
        """Set ``account``'s operator grant to ``amount`` bytes (0 revokes it)."""
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount < 2**63:
            raise StorageError(f"a quota is a whole number of bytes, got {amount!r}")
        who = check_account(account)
        with self._lock:
            self._db.execute(
                "INSERT INTO grants VALUES (?, ?) ON CONFLICT(account) DO UPDATE SET bytes = ?",
                (who, amount, amount),
            )

    def entries(self) -> list[QuotaEntry]:
        """Every account with a grant or usage, by account."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a, COALESCE((SELECT bytes FROM grants WHERE account = a), 0),"
                " COALESCE((SELECT bytes FROM usage WHERE account = a), 0) FROM"
                " (SELECT account AS a FROM grants UNION SELECT account FROM usage) ORDER BY a"
            ).fetchall()
        return [QuotaEntry(str(a), int(g), int(u)) for a, g, u in rows]

    def limit(self, account: str) -> int:
        """The bytes ``account`` may hold: the operator's grant plus every source's."""
        with self._lock:
            row = self._db.execute("SELECT bytes FROM grants WHERE account = ?", (account,))
            granted = row.fetchone()
        total = int(granted[0]) if granted else 0
        return total + sum(max(0, int(s.granted(account))) for s in self.sources)

    def used(self, account: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT bytes FROM usage WHERE account = ?", (account,))
            found = row.fetchone()
        return int(found[0]) if found else 0

    def reserve(self, account: str, size: int) -> None:
        """Hold ``size`` bytes of ``account``'s quota for a write under way; raises
        :class:`WriteRefused` (403 without a quota, 413 beyond it)."""
        limit = self.limit(account)
        if limit <= 0:
            raise WriteRefused(
                403,
                f"{account} has no storage quota on this node: ask its operator "
                "(datagora node quota grant) or make a storage deal with it",
            )
        used = self.used(account)
        with self._lock:
            pending = self._reserved.get(account, 0)
            if used + pending + size > limit:
                raise WriteRefused(
                    413,
                    f"{account} would exceed its quota on this node: {size} bytes asked, "
                    f"{max(0, limit - used - pending)} of {limit} left; nothing was stored",
                )
            self._reserved[account] = pending + size

    def settle(
        self,
        account: str,
        reserved: int,
        stored: int,
        blobs: Sequence[tuple[bytes, int]] = (),
    ) -> None:
        """End a reservation of ``reserved`` bytes; charge the ``stored`` bytes the write
        newly stored (a blob the node already held costs nothing). ``blobs`` are the
        (name, size) of the newly stored blobs: each is charged to ``account`` until
        :meth:`release` gives it back (retention deleted it)."""
        with self._lock:
            if blobs:
                self._db.executemany(
                    "INSERT OR REPLACE INTO charges VALUES (?, ?, ?)",
                    [(bytes(name), account, size) for name, size in blobs],
                )
            left = self._reserved.get(account, 0) - reserved
            if left > 0:
                self._reserved[account] = left
            else:
                self._reserved.pop(account, None)
            if stored:
                self._db.execute(
                    "INSERT INTO usage VALUES (?, ?) "
                    "ON CONFLICT(account) DO UPDATE SET bytes = bytes + ?",
                    (account, stored, stored),
                )

    def release(self, names: Iterable[bytes]) -> int:
        """Give back the quota of deleted blobs (e.g. by retention) to the accounts
        they were charged to; returns the bytes released. A blob nobody was charged
        for (stored before quotas, or given back already) releases nothing."""
        freed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for name in names:
                    row = self._db.execute(
                        "DELETE FROM charges WHERE name = ? RETURNING account, bytes",
                        (bytes(name),),
                    ).fetchone()
                    if row is None:
                        continue
                    account, size = str(row[0]), int(row[1])
                    self._db.execute(
                        "UPDATE usage SET bytes = MAX(0, bytes - ?) WHERE account = ?",
                        (size, account),
                    )
                    freed += size
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return freed


@dataclass
class WritePolicy:
    """How a node checks writes: its chain id (for the signature domain), the nonce
    store, the quotas, the URLs it answers to (None: the URL the request was sent
    to), the storage nodes placement records may name (None: any), and who controls
    a dataset (None: no ledger; placement records are then checked against the
    manifest and sequence only)."""

    quotas: QuotaBook
    nonces: NonceStore
    chain_id: int = DEFAULT_CHAIN_ID
    public_urls: Collection[str] | None = None
    known_nodes: Callable[[], Collection[str]] | None = None
    controllers: Controllers | None = None
    clock: Callable[[], float] = field(default=time.time)

    def verify(self, header: str | None, base_url: str, method: str, path: str) -> StorageWrite:
        """The checked :class:`StorageWrite` of a request (its nonce used up); raises
        :class:`WriteRefused` with 401. The body is checked against ``content`` and
        ``size`` by the caller as it arrives."""
        if not header:
            raise WriteRefused(
                401,
                f"writes to this node are signed: send a {SCHEME} request in the "
                f"{AUTH_HEADER} header (an account with a quota on this node)",
            )
        if len(header) > _MAX_HEADER:
            raise WriteRefused(401, f"the {AUTH_HEADER} header is too long")
        try:
            signed = SignedRequest.from_json(json.loads(base64.b64decode(header, validate=True)))
        except (ValueError, MalformedRequest) as exc:
            raise WriteRefused(401, f"malformed {AUTH_HEADER} header: {exc}") from None
        request = signed.request
        if not isinstance(request, StorageWrite):
            raise WriteRefused(401, f"the {AUTH_HEADER} header must carry a StorageWrite")
        audiences = (
            {base_url.rstrip("/")}
            if self.public_urls is None
            else {u.rstrip("/") for u in self.public_urls}
        )
        if request.node.rstrip("/") not in audiences:
            raise WriteRefused(
                401, f"the write was signed for node {request.node!r}, not this node"
            )
        if request.method != method or request.path != path:
            raise WriteRefused(
                401,
                f"the write was signed for {request.method} {request.path}, not {method} {path}",
            )
        try:
            verify_request(
                signed, self.chain_id, int(self.clock()), self.nonces, expect=StorageWrite
            )
        except RequestRefused as exc:
            raise WriteRefused(401, f"the write's signature is refused: {exc}") from None
        return request
