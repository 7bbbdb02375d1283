"""Without PyTorch, `.to_torch` says how to get the CPU build, not the CUDA one."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from datagora.errors import ConfigError
from datagora.torchdata import TabularDataset

ROOT = Path(__file__).resolve().parents[2]


def test_missing_torch_names_the_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(ConfigError) as caught:
        TabularDataset(pd.DataFrame({"x": [1.0], "y": [0]}), target="y")
    message = str(caught.value)
    assert "\n" not in message
    assert "CPU build of PyTorch" in message and "README" in message, message
    assert "pip install 'datagora[torch]'" not in message  # the several-GB CUDA install


def test_the_readme_gives_the_makefiles_cpu_torch() -> None:
    pinned = re.search(r"^TORCH\s*\?=\s*(\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert pinned, "the Makefile pins the CPU build of torch"
    assert f"pip install '{pinned.group(1)}'" in (ROOT / "README.md").read_text()
