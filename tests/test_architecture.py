"""The house rules that `make lint` cannot see: the chain stays sealed, errors form one tree.

The layer order itself is import-linter's contract in pyproject.toml (run by `make lint`).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "datagora"
LEDGER = SRC / "ledger"


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize(
    "path",
    [p for p in _modules() if LEDGER not in p.parents],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_nothing_above_the_ledger_mentions_w3(path: Path) -> None:
    """web3's object stays behind the `Chain` interface: no name, attribute or comment says w3."""
    source = path.read_text()
    hits = [
        f"{path.relative_to(SRC)}:{tok.start[0]}"
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if (tok.type == tokenize.NAME and tok.string == "w3")
        or (tok.type == tokenize.COMMENT and re.search(r"\bw3\b", tok.string))
    ]
    assert not hits, f"w3 used above the ledger at {hits}: add what you need to Chain"


def _exception_classes() -> dict[str, list[str]]:
    """Every class defined in src whose bases end in Error/Exception, by name: where defined."""
    found: dict[str, list[str]] = {}
    for path in _modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.bases:
                bases = [ast.unparse(b) for b in node.bases]
                if any(b.endswith(("Error", "Exception", "Refused", "Exceeded")) for b in bases):
                    found.setdefault(node.name, []).append(str(path.relative_to(SRC)))
    return found


def test_no_exception_is_defined_twice() -> None:
    """One tree: a name means one class (two NotController classes caught different things)."""
    twice = {name: where for name, where in _exception_classes().items() if len(where) > 1}
    assert not twice, f"exception classes defined more than once: {twice}"


def test_every_public_exception_is_a_datagora_error() -> None:
    """Errors a caller can see derive from DatagoraError; private ones start with an underscore."""
    import importlib

    from datagora.errors import DatagoraError

    strays = []
    for path in _modules():
        module = ".".join(("datagora", *path.relative_to(SRC).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        if module.endswith("__main__") or "algorithms" in module:
            continue
        tree = ast.parse(path.read_text())
        names = [
            n.name for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")
        ]
        if not names:
            continue
        loaded = importlib.import_module(module)
        for name in names:
            obj = getattr(loaded, name)
            if (
                isinstance(obj, type)
                and issubclass(obj, Exception)
                and not issubclass(obj, DatagoraError)
            ):
                strays.append(f"{module}.{name}")
    assert not strays, f"public exceptions outside the DatagoraError tree: {strays}"


# Helper-floor modules below every layer may keep their own error beside them.
_OWN_ERRORS = {"http1.py"}


def test_each_layer_defines_its_errors_in_its_errors_module() -> None:
    """A layer's public exceptions live in its errors.py, so the tree can be read in one place."""
    strays = [
        f"{where}:{name}"
        for name, places in _exception_classes().items()
        for where in places
        if not name.startswith("_") and Path(where).name != "errors.py" and where not in _OWN_ERRORS
    ]
    assert not strays, f"exceptions defined outside an errors.py: {strays}"


def test_docs_draw_the_whole_error_tree() -> None:
    """docs/errors.md names every error class, under the module that defines it."""
    import importlib

    from datagora.errors import DatagoraError

    doc = (SRC.parents[1] / "docs" / "errors.md").read_text()
    missing = []
    for path in _modules():
        if path.name != "errors.py" and path.name not in _OWN_ERRORS:
            continue
        module = ".".join(("datagora", *path.relative_to(SRC).with_suffix("").parts))
        loaded = importlib.import_module(module)
        for name, obj in vars(loaded).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, DatagoraError)
                and obj.__module__ == module
                and f"{name}  {module}" not in doc
            ):
                missing.append(f"{module}.{name}")
    assert not missing, f"docs/errors.md does not show {missing}"
