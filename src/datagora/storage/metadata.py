"""The dataset metadata schema: validated at publish, hashed canonically, hash on chain.

A metadata document is JSON (schema below, JSON Schema in
``docs/metadata.schema.json``). Its on-chain hash is the SHA-256 of its
canonical form: keys sorted, no insignificant whitespace, UTF-8, fields with
no value left out. Bytes that are not canonical are refused, so one document
has exactly one hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from datagora.storage.errors import MetadataError

FORMAT: Final = "datagora.metadata"
FORMAT_VERSION: Final = 1
MAX_METADATA_BYTES = 64 * 1024

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9+._-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Column(_Strict):
    """One column of a tabular dataset."""

    name: Annotated[str, Field(min_length=1, max_length=128)]
    type: Literal["int", "float", "bool", "str", "category", "datetime", "date", "bytes"]
    description: Annotated[str, Field(max_length=1000)] | None = None


class TimeRange(_Strict):
    """The period the data covers (ISO 8601)."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.end < self.start:
            raise ValueError("time_range.end is before time_range.start")
        return self


class MockData(_Strict):
    """Where the public, synthetic, schema-preserving sample lives, and its SHA-256."""

    uri: Annotated[str, Field(min_length=1, max_length=432)]
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: str) -> str:
        if not _HEX64.match(v):
            raise ValueError("must be 64 lowercase hex digits")
        return v


class PublisherKeys(_Strict):
    """The publisher's public Umbral keys, which consumers need to check the capsule
    fragments proxies return (``datagora.crypto.keys.PublicIdentity``)."""

    umbral_public_key: str
    verifying_key: str

    @field_validator("umbral_public_key", "verifying_key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not re.match(r"^0[23][0-9a-f]{64}$", v):
            raise ValueError("must be a 33-byte compressed public key in lowercase hex")
        return v


class Service(_Strict):
    """A way to use the dataset: download it, or compute on it where it is."""

    id: Annotated[int, Field(ge=0, lt=2**32)]
    type: Literal["download", "compute"]
    # Price of one order in MarketToken base units, as a decimal string (exact for
    # 18-decimal amounts); "0" for free services.
    price: Annotated[str, Field(pattern=r"^(0|[1-9][0-9]{0,40})$")] = "0"
    policy: Literal["automatic", "approval"] = "automatic"
    timeout: Annotated[int, Field(gt=0, le=10 * 365 * 86_400)] = 86_400
    # compute only: SHA-256 (hex) of algorithms allowed without review.
    trusted_algorithms: list[str] = []
    differential_privacy: bool = False

    @field_validator("trusted_algorithms")
    @classmethod
    def _hashes(cls, v: list[str]) -> list[str]:
        for h in v:
            if not _HEX64.match(h):
                raise ValueError("algorithm hashes are 64 lowercase hex digits")
        return v

    @model_validator(mode="after")
    def _compute_fields(self) -> Service:
        if self.type == "download" and (self.trusted_algorithms or self.differential_privacy):
            raise ValueError("trusted_algorithms and differential_privacy apply to compute only")
        return self


class Metadata(_Strict):
    """A dataset's public description."""

    format: Literal["datagora.metadata"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=20_000)] = ""
    tags: Annotated[list[str], Field(max_length=32)] = []
    license: Annotated[str, Field(min_length=1, max_length=64)]
    creator: Annotated[str, Field(min_length=1, max_length=200)]
    time_range: TimeRange | None = None
    columns: Annotated[list[Column], Field(max_length=2_000)] | None = None
    mock: MockData | None = None
    services: Annotated[list[Service], Field(min_length=1, max_length=16)]
    publisher_keys: PublisherKeys | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for tag in v:
            if not _TAG.match(tag):
                raise ValueError(
                    f"tag {tag!r}: lowercase letters, digits and + . _ - only, 1-64 characters"
                )
        if len(set(v)) != len(v):
            raise ValueError("tags repeat")
        return v

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, v: list[Column] | None) -> list[Column] | None:
        if v is not None and len({c.name for c in v}) != len(v):
            raise ValueError("column names repeat")
        return v

    @field_validator("services")
    @classmethod
    def _unique_services(cls, v: list[Service]) -> list[Service]:
        if len({s.id for s in v}) != len(v):
            raise ValueError("service ids repeat")
        return v

    def to_bytes(self) -> bytes:
        """The canonical bytes whose SHA-256 goes on chain."""
        data = self.model_dump(mode="json", exclude_none=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    def service(self, service_id: int) -> Service:
        for s in self.services:
            if s.id == service_id:
                return s
        raise MetadataError(f"the dataset has no service {service_id}")


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "document"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"metadata {where}: {first['msg']}{more}"


def build_metadata(data: dict[str, Any]) -> Metadata:
    """Validate a metadata dict (as a publisher writes it); clear error on the first problem."""
    try:
        return Metadata.model_validate(data)
    except ValidationError as exc:
        raise MetadataError(_describe(exc)) from None


def parse_metadata(raw: bytes, expected_sha256: bytes | None = None) -> Metadata:
    """Parse canonical metadata bytes, checking them against `expected_sha256` if given."""
    if len(raw) > MAX_METADATA_BYTES:
        raise MetadataError(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    if expected_sha256 is not None and hashlib.sha256(raw).digest() != expected_sha256:
        raise MetadataError("metadata does not match its on-chain hash")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetadataError(f"metadata is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MetadataError("metadata must be a JSON object")
    meta = build_metadata(data)
    if meta.to_bytes() != raw:
        raise MetadataError("metadata is not in canonical form (sorted keys, no spaces, UTF-8)")
    return meta


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a metadata document."""
    return Metadata.model_json_schema()
