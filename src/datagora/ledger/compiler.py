"""Compile datagora's Vyper contracts with the `vyper` package, cached on disk.

The cache key is the SHA-256 of the compiler version and of every Vyper source a
contract can import (ours and snekmate's), so an artifact is never stale: change
any source or upgrade either package and the contracts are compiled again.
"""

from __future__ import annotations

import hashlib
import json
import os
import site
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import vyper
from vyper.compiler import compile_from_file_input
from vyper.compiler.input_bundle import FilesystemInputBundle
from vyper.compiler.settings import OptimizationLevel, Settings

from datagora.atomic import write_atomically
from datagora.errors import ConfigError

CONTRACTS_DIR = Path(__file__).parent / "contracts"

# Venom, vyper's newer code generator, gives smaller and cheaper code for these
# contracts (measured by `datagora bench ledger`).
SETTINGS = Settings(optimize=OptimizationLevel.GAS, experimental_codegen=True)

CONTRACT_NAMES = (
    "MarketToken",
    "DataNFT",
    "Datatoken",
    "FixedRateExchange",
    "Dispenser",
    "Factory",
    "AccessRegistry",
    "KeyValueStore",
    "CiphertextStore",
    "MerkleVerifier",
    "AccessLog",
    "ComputeRegistry",
    "StorageLog",
    "NodeRegistry",
)


@dataclass(frozen=True)
class CompiledContract:
    """The ABI and creation bytecode of one contract."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes


def _search_paths() -> list[Path]:
    paths = [CONTRACTS_DIR]
    for p in site.getsitepackages():
        if (Path(p) / "snekmate").is_dir():
            paths.append(Path(p))
    return paths


def _cache_dir() -> Path:
    root = os.environ.get("DATAGORA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "datagora"
    )
    return Path(root) / "contracts"


@cache
def _sources_digest() -> str:
    h = hashlib.sha256(f"vyper {vyper.__version__} {SETTINGS}\n".encode())
    for base in _search_paths():
        root = base if base == CONTRACTS_DIR else base / "snekmate"
        for path in sorted(root.rglob("*.vy*")):
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def _compile(name: str) -> CompiledContract:
    source = CONTRACTS_DIR / f"{name}.vy"
    if not source.is_file():
        raise ConfigError(f"no contract named {name!r} in {CONTRACTS_DIR}")
    bundle = FilesystemInputBundle(_search_paths())
    out = compile_from_file_input(
        bundle.load_file(source),
        input_bundle=bundle,
        settings=SETTINGS,
        output_formats=["abi", "bytecode"],
    )
    return CompiledContract(name=name, abi=out["abi"], bytecode=bytes.fromhex(out["bytecode"][2:]))


@cache
def compile_contract(name: str) -> CompiledContract:
    """Return contract `name`, from the disk cache when its sources are unchanged."""
    path = _cache_dir() / f"{name}-{_sources_digest()[:32]}.json"
    try:
        data = json.loads(path.read_text())
        return CompiledContract(name, data["abi"], bytes.fromhex(data["bytecode"]))
    except (OSError, ValueError, KeyError):
        pass
    compiled = _compile(name)
    # Atomic, so a concurrent reader never sees half a file.
    write_atomically(path, json.dumps({"abi": compiled.abi, "bytecode": compiled.bytecode.hex()}))
    return compiled
