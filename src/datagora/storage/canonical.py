"""Strict canonical JSON, the encoding of manifests and placement records.

Canonical form is sorted keys, no whitespace, ASCII only, no NaN or infinities
(:func:`canonical_json`), so one document has one spelling and one SHA-256. The
strict parsers built on it (:mod:`datagora.storage.manifest`,
:mod:`datagora.storage.placement`) read with :func:`loads_strict` (no duplicate
keys, no non-integer numbers, no ``NaN``/``Infinity``), check objects with
:func:`check_fields`, :func:`check_hex` and :func:`check_int`, and refuse bytes that
do not re-encode to themselves. Every refusal raises :class:`ManifestError`.
"""

from __future__ import annotations

import json
from typing import Any

from datagora.storage.errors import ManifestError

__all__ = [
    "canonical_json",
    "check_fields",
    "check_hex",
    "check_int",
    "loads_strict",
]


def canonical_json(obj: Any) -> bytes:
    """``obj`` as canonical JSON bytes (sorted keys, no whitespace, ASCII, no NaN)."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def loads_strict(text: str) -> Any:
    """Parse JSON ``text``, refusing duplicate keys, non-integer numbers and the
    constants ``NaN``, ``Infinity`` and ``-Infinity`` (:class:`ManifestError`);
    malformed JSON raises :class:`json.JSONDecodeError` as usual."""
    return json.loads(
        text,
        object_pairs_hook=_no_duplicates,
        parse_constant=_reject_constant,
        parse_float=_reject_float,
    )


def check_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool) in ``low..high``, else :class:`ManifestError`."""
    # bool is an int subclass in Python; a manifest never means True by 1.
    if type(value) is not int or not low <= value <= high:
        raise ManifestError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ManifestError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise ManifestError(f"{name} is not allowed in a manifest")


def _reject_float(text: str) -> Any:
    raise ManifestError(f"non-integer number {text} is not allowed in a manifest")


def check_fields(obj: Any, where: str, names: set[str]) -> dict[str, Any]:
    """``obj`` if it is a JSON object with exactly the fields ``names``."""
    if not isinstance(obj, dict):
        raise ManifestError(f"{where} must be a JSON object")
    missing, extra = names - set(obj), set(obj) - names
    if missing:
        raise ManifestError(f"{where} is missing {', '.join(sorted(missing))}")
    if extra:
        raise ManifestError(f"{where} has unknown fields {', '.join(sorted(extra))}")
    return obj


def check_hex(value: Any, where: str, size: int | None = None) -> bytes:
    """The bytes of a lowercase hex string (of ``size`` bytes when given)."""
    if not isinstance(value, str) or value != value.lower():
        raise ManifestError(f"{where} must be a lowercase hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ManifestError(f"{where} must be a lowercase hex string") from None
    if len(raw) * 2 != len(value):
        raise ManifestError(f"{where} must be a lowercase hex string without spaces")
    if size is not None and len(raw) != size:
        raise ManifestError(f"{where} must be {size} bytes ({2 * size} hex digits)")
    return raw
