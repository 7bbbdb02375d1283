"""The output policy: what may leave the compute node after a job.

- The output directory may hold only regular files and folders, at most
  ``max_output_bytes`` in all.
- Logs (stdout, stderr) are cut to ``max_log_bytes``.
- Neither the output nor the logs may reproduce input rows: every input table
  (CSV, TSV, Parquet) is indexed as normalised rows, and every output file and the
  logs are scanned for them. Normalisation: a row's cells are joined and split
  into tokens on blanks and punctuation (``, ; | : = " ' [ ] { } ( )``), numbers
  are rewritten with 6 significant digits (``17.990`` and ``1.799e+01`` are the
  same token), text is lower-cased, empty / NaN tokens and column names are
  dropped. A row is found when its whole token sequence appears consecutively
  anywhere in a file's token stream, so CSV (with or without an index column),
  JSON records, JSON lists and printed arrays are all caught. Parquet and
  ``.npy``/``.npz`` outputs are decoded first; other binary files are scanned as
  Latin-1 text, which does not see numbers stored in binary (a pickled model that
  memorises its training rows is *not* caught: that is what review is for).
- A job is refused when the distinct input rows found reach
  ``max(1, min(max_reproduced_rows, ceil(max_reproduced_fraction × rows)))``;
  rows of fewer than two tokens are not counted (they match by chance).

Reasons never name files or values: they are written by the node, may go on
chain, and the algorithm chooses file names.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

__all__ = [
    "TABLE_SUFFIXES",
    "OutputPolicy",
    "RowIndex",
    "Verdict",
    "archive_output",
    "check_logs",
    "check_output",
]

TABLE_SUFFIXES: Final = (".csv", ".tsv", ".parquet", ".pq")
_SPLIT: Final = re.compile(r"[\s,;|:=\"'\[\]{}()]+")
_EMPTY: Final = frozenset({"", "nan", "none", "null", "na", "<na>", "nat"})
_MiB: Final = 1 << 20
_MULT: Final = np.uint64(1099511628211)  # the 64-bit FNV prime, as the rolling-hash base


@dataclass(frozen=True, slots=True)
class OutputPolicy:
    """Caps and thresholds of the output policy (see the module docstring)."""

    max_output_bytes: int = 64 * _MiB
    max_log_bytes: int = 64 * 1024
    max_reproduced_rows: int = 10
    max_reproduced_fraction: float = 0.05


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the output may leave, and if not, why (a node-written text)."""

    ok: bool
    reason: str = ""
    output_bytes: int = 0
    rows_found: int = 0


def _token(raw: str) -> str:
    try:
        value = float(raw)
    except ValueError:
        return raw.lower()
    if not math.isfinite(value):
        return raw.lower()
    if value == 0:
        value = 0.0
    return format(value, ".6g")


def _tokens(text: str, drop: frozenset[str] = frozenset()) -> list[str]:
    out = []
    for raw in _SPLIT.split(text):
        tok = _token(raw)
        if tok not in _EMPTY and tok not in drop:
            out.append(tok)
    return out


def _hash_tokens(tokens: list[str]) -> np.ndarray[Any, np.dtype[np.uint64]]:
    # Python's str hash is salted per process; index and scan run in one process.
    return np.fromiter((hash(t) & 0xFFFFFFFFFFFFFFFF for t in tokens), np.uint64, len(tokens))


def _window_keys(
    hashes: np.ndarray[Any, np.dtype[np.uint64]], length: int
) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """Polynomial hash of every window of `length` consecutive tokens (wrapping uint64)."""
    n = hashes.shape[0] - length + 1
    if n <= 0:
        return np.empty(0, np.uint64)
    keys = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(length):
            keys = keys * _MULT + hashes[j : j + n]
    return keys


class RowIndex:
    """The normalised rows of a job's input tables, for finding them in outputs."""

    def __init__(self) -> None:
        self._keys: dict[int, np.ndarray[Any, np.dtype[np.uint64]]] = {}
        self.rows = 0
        self.columns: frozenset[str] = frozenset()

    @classmethod
    def from_paths(cls, inputs: Mapping[int, Path] | Iterable[Path]) -> RowIndex:
        """Index every CSV/TSV/Parquet input; other files are not tables and are skipped."""
        import pandas

        paths = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
        index = cls()
        by_length: dict[int, set[int]] = {}
        columns: set[str] = set()
        for path in paths:
            suffix = path.suffix.lower()
            if suffix not in TABLE_SUFFIXES:
                continue
            if suffix in (".csv", ".tsv"):
                frame = pandas.read_csv(
                    path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False
                )
            else:
                frame = pandas.read_parquet(path).astype(str)
            columns.update(_tokens(" ".join(str(c) for c in frame.columns)))
            for row in frame.itertuples(index=False, name=None):
                tokens = _tokens(" ".join(str(v) for v in row))
                if len(tokens) < 2:
                    continue
                key = int(_window_keys(_hash_tokens(tokens), len(tokens))[0])
                by_length.setdefault(len(tokens), set()).add(key)
        index._keys = {
            length: np.fromiter(keys, np.uint64, len(keys)) for length, keys in by_length.items()
        }
        index.rows = sum(len(k) for k in index._keys.values())
        index.columns = frozenset(columns)
        return index

    def threshold(self, policy: OutputPolicy) -> int:
        """How many distinct input rows found make an output refused."""
        share = math.ceil(policy.max_reproduced_fraction * self.rows)
        return max(1, min(policy.max_reproduced_rows, share))

    def find(self, text: str) -> set[tuple[int, int]]:
        """The distinct input rows (as (length, key)) that appear in `text`."""
        if not self._keys:
            return set()
        hashes = _hash_tokens(_tokens(text, self.columns))
        found: set[tuple[int, int]] = set()
        for length, keys in self._keys.items():
            windows = _window_keys(hashes, length)
            if windows.size:
                hits = np.intersect1d(keys, windows, assume_unique=False)
                found.update((length, int(k)) for k in hits)
        return found


def _file_text(path: Path, limit: int) -> str:
    """A file's content as text for scanning: tables and arrays decoded, else Latin-1."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pandas

            return str(pandas.read_parquet(path).to_csv(index=False))
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            return "\n".join(" ".join(map(str, np.atleast_1d(r))) for r in np.atleast_2d(array))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as bundle:
                parts = [bundle[name] for name in bundle.files]
            return "\n".join(
                " ".join(map(str, np.atleast_1d(r))) for a in parts for r in np.atleast_2d(a)
            )
    except (ValueError, OSError, ImportError):
        pass  # not what its name says: scan its bytes as text below
    with open(path, "rb") as f:
        data = f.read(limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def check_output(output_dir: Path, index: RowIndex, policy: OutputPolicy) -> Verdict:
    """Check a job's output directory against the policy."""
    total = 0
    files: list[Path] = []
    for path in sorted(output_dir.rglob("*")):
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            return Verdict(False, "the output contains a symbolic link or a special file")
        if path.is_file():
            total += path.stat().st_size
            files.append(path)
        if total > policy.max_output_bytes:
            return Verdict(
                False,
                f"the output is larger than the cap of {policy.max_output_bytes} bytes",
                total,
            )
    found: set[tuple[int, int]] = set()
    for path in files:
        found |= index.find(_file_text(path, policy.max_output_bytes))
    if len(found) >= index.threshold(policy):
        return Verdict(
            False,
            f"the output reproduces {len(found)} of the {index.rows} input rows "
            f"(the limit is {index.threshold(policy) - 1}); outputs may not contain input rows",
            total,
            len(found),
        )
    return Verdict(True, "", total, len(found))


def check_logs(logs: bytes, index: RowIndex, policy: OutputPolicy) -> tuple[bytes, str]:
    """The logs as they may leave (cut to the cap), or empty bytes and why they are withheld."""
    cut = logs[: policy.max_log_bytes]
    found = index.find(cut.decode("utf-8", "replace"))
    if len(found) >= index.threshold(policy):
        return b"", (f"logs withheld: they reproduce {len(found)} of the {index.rows} input rows")
    if len(logs) > len(cut):
        cut += f"\n[logs truncated at {policy.max_log_bytes} bytes]\n".encode()
    return cut, ""


def archive_output(output_dir: Path) -> bytes:
    """The output directory as a deterministic tar archive (regular files and folders)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(output_dir.rglob("*")):
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                continue  # a link could point at the node's own files; FIFOs would block
            rel = path.relative_to(output_dir).as_posix()
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def digest(data: bytes) -> bytes:
    """SHA-256 of `data`."""
    return hashlib.sha256(data).digest()
