"""Finding the benchmarks, which live in the repository's `benchmarks/` directory."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from datagora.errors import ConfigError


def _benchmarks_root() -> Path:
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        if (base / "benchmarks" / "__init__.py").is_file():
            return base
    raise ConfigError(
        "the benchmarks/ directory was not found: run `datagora bench` from a datagora checkout"
    )


def load_benchmark(name: str) -> ModuleType:
    root = str(_benchmarks_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"benchmarks.{name}")
