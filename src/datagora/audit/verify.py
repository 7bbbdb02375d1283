"""Recomputing every hash the ledger commits to, from public sources and without a key.

For each version of a dataset the chain records a metadata hash, a manifest
hash and a Merkle root. :func:`verify` fetches the metadata from where the
catalog would (storage nodes by hash, the version's http(s) URI, catalog nodes'
``GET /metadata/{sha256}``), the manifest from the storage nodes, and a random
sample of shares, and checks each against the chain. Every copy found is
checked, so one node serving corrupted bytes is named even when another serves
good ones.

Each check ends ``ok``, ``mismatch`` (bytes were found and are wrong) or
``unavailable`` (no source answered). A report is ``ok`` when nothing
mismatched; what was unavailable is listed apart, since absence is not proof of
tampering. Nor is it proof of anything else: only a ``complete`` report (every
check made, none mismatched) verifies a dataset, and the counts
(:attr:`VerifyReport.checked`, ``unavailable``, ``mismatches``) say how much
was seen.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from datagora.audit.timeline import EMPTY32, DatasetVersion, TimelineEntry, timeline, versions
from datagora.ledger import Ledger
from datagora.storage.errors import IntegrityError, ManifestError
from datagora.storage.manifest import MAX_MANIFEST_BYTES, VerifiedManifest, verify_manifest
from datagora.storage.merkle import MerkleProof, verify_inclusion
from datagora.storage.metadata import MAX_METADATA_BYTES
from datagora.storage.pages import PageRef, VerifiedPage, leaf_proof_sync, verify_page

MAX_SHARE_BYTES = 256 * 1024 * 1024
_PARALLEL = 8


class Status(enum.StrEnum):
    """The outcome of one check."""

    OK = "ok"
    MISMATCH = "mismatch"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Check:
    """One recomputed hash: what was checked, against what, from where, and the outcome."""

    version: int
    subject: str  # "metadata", "manifest", "root" or "share <hex>"
    status: Status
    expected: str  # the on-chain (or manifest-listed) hash, hex
    source: str  # the URL the bytes came from, or "" when none answered
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    """Every check of one dataset. ``ok`` means nothing mismatched."""

    dataset: int
    versions: int
    checks: tuple[Check, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def checked(self) -> list[Check]:
        """The checks that were made and passed."""
        return [c for c in self.checks if c.status is Status.OK]

    @property
    def mismatches(self) -> list[Check]:
        return [c for c in self.checks if c.status is Status.MISMATCH]

    @property
    def unavailable(self) -> list[Check]:
        return [c for c in self.checks if c.status is Status.UNAVAILABLE]

    @property
    def ok(self) -> bool:
        """True if no hash mismatched (unavailable sources are reported apart)."""
        return not self.mismatches

    @property
    def complete(self) -> bool:
        """True if every check passed and none was left unavailable (and there was one)."""
        return self.ok and not self.unavailable and bool(self.checked)

    def counts(self) -> str:
        """``checked N, unavailable U, mismatched M`` (checks, not bytes)."""
        return (
            f"checked {len(self.checked)}, unavailable {len(self.unavailable)}, "
            f"mismatched {len(self.mismatches)}"
        )


class _Fetcher:
    """GETs with a size cap, a timeout and no redirects; None when there is nothing there."""

    def __init__(self, timeout: float) -> None:
        self.client = httpx.Client(timeout=timeout, follow_redirects=False)

    def get(self, url: str, cap: int) -> tuple[bytes | None, str]:
        """(body, "") on 200; (None, why) when the source has nothing usable."""
        try:
            with self.client.stream("GET", url) as r:
                if r.status_code != 200:
                    return None, f"HTTP {r.status_code}"
                body = bytearray()
                for piece in r.iter_bytes():
                    body += piece
                    if len(body) > cap:
                        return None, f"larger than {cap} bytes"
                return bytes(body), ""
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        self.client.close()


def _hex(value: bytes) -> str:
    return value.hex()


def _metadata_urls(
    v: DatasetVersion, nodes: Sequence[str], catalogs: Sequence[str], fetch_http: bool
) -> list[str]:
    name = v.metadata_hash.hex()
    urls = []
    if fetch_http and v.metadata_uri.startswith(("https://", "http://")):
        urls.append(v.metadata_uri)
    urls += [f"{n}/shares/{name}" for n in nodes]
    urls += [f"{c}/metadata/{name}" for c in catalogs]
    return urls


def _check_copies(
    fetcher: _Fetcher, version: int, subject: str, expected: bytes, urls: list[str], cap: int
) -> tuple[list[Check], bytes | None]:
    """Fetch every copy; each wrong copy is a mismatch, the first good one an ok."""
    checks: list[Check] = []
    good: bytes | None = None
    misses: list[str] = []
    for url in urls:
        body, why = fetcher.get(url, cap)
        if body is None:
            misses.append(f"{url}: {why}")
            continue
        actual = hashlib.sha256(body).digest()
        if actual != expected:
            checks.append(
                Check(
                    version,
                    subject,
                    Status.MISMATCH,
                    _hex(expected),
                    url,
                    f"{len(body)} bytes hashing to {actual.hex()}, not the on-chain value",
                )
            )
        elif good is None:
            good = body
            checks.append(
                Check(version, subject, Status.OK, _hex(expected), url, "SHA-256 matches")
            )
    if good is None and not checks:
        reason = "; ".join(misses) if misses else "no source to ask"
        checks.append(Check(version, subject, Status.UNAVAILABLE, _hex(expected), "", reason))
    return checks, good


def _verify_manifest(
    fetcher: _Fetcher, v: DatasetVersion, nodes: Sequence[str]
) -> tuple[list[Check], VerifiedManifest | None]:
    urls = [f"{n}/shares/{v.manifest_hash.hex()}" for n in nodes]
    checks, body = _check_copies(
        fetcher, v.version, "manifest", v.manifest_hash, urls, MAX_MANIFEST_BYTES
    )
    if body is None:
        return checks, None
    try:
        verified = verify_manifest(body, v.manifest_hash)
    except ManifestError as exc:
        # The hash matches, so the chain commits to a malformed manifest.
        checks.append(
            Check(
                v.version,
                "manifest",
                Status.MISMATCH,
                _hex(v.manifest_hash),
                "",
                f"malformed: {exc}",
            )
        )
        return checks, None
    root = verified.manifest.merkle_root
    if root == v.merkle_root:
        checks.append(
            Check(v.version, "root", Status.OK, _hex(v.merkle_root), "", "manifest root matches")
        )
    else:
        checks.append(
            Check(
                v.version,
                "root",
                Status.MISMATCH,
                _hex(v.merkle_root),
                "",
                f"the manifest's Merkle root is {root.hex()}",
            )
        )
    return checks, verified


def _verify_paged_share(
    fetcher: _Fetcher,
    version: int,
    verified: VerifiedManifest,
    leaf: int,
    chain_root: bytes,
    nodes: Sequence[str],
) -> list[Check]:
    """A share of a paged manifest, picked by its leaf: its address and proof come
    from the manifest pages on the path (each verified against its parent)."""
    tree = verified.manifest.tree
    assert tree is not None
    problems: list[str] = []

    def fetch(ref: PageRef, level: int, first: int, count: int) -> VerifiedPage:
        for node in nodes:
            url = f"{node}/shares/{ref.address.hex()}"
            body, why = fetcher.get(url, MAX_MANIFEST_BYTES)
            if body is None:
                problems.append(f"{url}: {why}")
                continue
            try:
                return verify_page(body, ref, tree, level, first, count)
            except IntegrityError as exc:
                problems.append(f"{url}: {exc}")
        raise IntegrityError("; ".join(problems) or "no storage node to ask")

    try:
        share, proof = leaf_proof_sync(tree, leaf, fetch)
    except IntegrityError as exc:
        return [
            Check(version, f"manifest pages to leaf {leaf}", Status.UNAVAILABLE, "", "", str(exc))
        ]
    return _verify_share(fetcher, version, verified, share, chain_root, nodes, proof)


def _verify_share(
    fetcher: _Fetcher,
    version: int,
    verified: VerifiedManifest,
    share: bytes,
    chain_root: bytes,
    nodes: Sequence[str],
    paged_proof: MerkleProof | None = None,
) -> list[Check]:
    subject = f"share {share.hex()}"
    if paged_proof is not None:
        proof = paged_proof
        position = divmod(proof.leaf_index, verified.manifest.n)
    else:
        found = verified.manifest.share_position(share)
        assert found is not None  # sampled from this manifest
        position = found
        proof = verified.proof(share)
    if not verify_inclusion(share, proof, chain_root):
        return [
            Check(
                version,
                subject,
                Status.MISMATCH,
                share.hex(),
                "",
                "the manifest's proof does not place this share under the on-chain root",
            )
        ]
    checks: list[Check] = []
    misses: list[str] = []
    for node in nodes:
        url = f"{node}/shares/{share.hex()}"
        body, why = fetcher.get(url, MAX_SHARE_BYTES)
        if body is None:
            misses.append(f"{url}: {why}")
            continue
        try:
            if paged_proof is not None:
                verified.verify_proven_share(share, paged_proof, body)
            else:
                verified.verify_share(position[0], position[1], body)
        except IntegrityError as exc:
            checks.append(Check(version, subject, Status.MISMATCH, share.hex(), url, str(exc)))
            continue
        checks.append(
            Check(
                version,
                subject,
                Status.OK,
                share.hex(),
                url,
                f"hash, header and Merkle proof (leaf {proof.leaf_index} of {proof.tree_size})",
            )
        )
    if not checks:
        reason = "; ".join(misses) if misses else "no storage node to ask"
        checks.append(Check(version, subject, Status.UNAVAILABLE, share.hex(), "", reason))
    return checks


def verify(
    ledger: Ledger,
    dataset: int,
    storage_nodes: Sequence[str] = (),
    metadata_sources: Sequence[str] = (),
    sample: int = 16,
    *,
    fetch_http: bool = True,
    timeout: float = 5.0,
    seed: int | None = None,
    entries: Sequence[TimelineEntry] | None = None,
) -> VerifyReport:
    """Check every hash the ledger holds for `dataset` against bytes found on the network.

    `storage_nodes` are storage node base URLs; `metadata_sources` are catalog
    node base URLs (``GET /metadata/{sha256}``); the on-chain http(s) URI of each
    version is fetched too unless `fetch_http` is false. Up to `sample` shares per
    version are drawn at random (`seed` makes the draw repeatable). `entries`
    reuses an already built timeline. Needs no key and no cooperation from the
    owner; raises :class:`DatasetNotFound` for an unknown dataset.
    """
    nodes = [n.rstrip("/") for n in storage_nodes]
    catalogs = [c.rstrip("/") for c in metadata_sources]
    history = versions(entries if entries is not None else timeline(ledger, dataset))
    rng = random.Random(seed)
    fetcher = _Fetcher(timeout)
    checks: list[Check] = []
    notes: list[str] = []
    try:
        for v in history:
            urls = _metadata_urls(v, nodes, catalogs, fetch_http)
            found, _ = _check_copies(
                fetcher, v.version, "metadata", v.metadata_hash, urls, MAX_METADATA_BYTES
            )
            checks += found
            if v.manifest_hash == EMPTY32:
                notes.append(f"version {v.version} records no manifest: no storage checks")
                continue
            found, verified = _verify_manifest(fetcher, v, nodes)
            checks += found
            if verified is None or v.merkle_root == EMPTY32:
                continue
            if verified.paged:
                # The share list is in pages: draw leaves, read only their pages.
                m = verified.manifest
                total = m.chunk_count * m.n
                leaves = rng.sample(range(total), min(sample, total))
                with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
                    for result in pool.map(
                        lambda leaf, v=v, m=verified: _verify_paged_share(  # type: ignore[misc]
                            fetcher, v.version, m, leaf, v.merkle_root, nodes
                        ),
                        leaves,
                    ):
                        checks += result
                notes.append(f"version {v.version}: {len(leaves)} of {total} shares sampled")
                continue
            shares = list(verified.manifest.share_hashes())
            picked = rng.sample(shares, min(sample, len(shares)))
            with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
                for result in pool.map(
                    lambda s, v=v, m=verified: _verify_share(  # type: ignore[misc]
                        fetcher, v.version, m, s, v.merkle_root, nodes
                    ),
                    picked,
                ):
                    checks += result
            notes.append(f"version {v.version}: {len(picked)} of {len(shares)} shares sampled")
    finally:
        fetcher.close()
    return VerifyReport(dataset, len(history), tuple(checks), tuple(notes))
