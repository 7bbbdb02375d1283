"""A short chaos run (`datagora bench chaos` with a few faults) in the suite: parts of a
real `up` network, the chain among them, are killed, stalled and corrupted while an
owner publishes and a researcher buys, downloads and runs compute jobs; nothing
acknowledged may be lost, no download may return other bytes, no buy or job may be
charged twice, no job run twice, every failure is a clean one and every killed part
comes back. The long run (200 faults) is the benchmark's."""

from __future__ import annotations

import pytest

from datagora.cli.benchmarks import load_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.anvil]


def test_a_short_chaos_run_loses_nothing_and_fails_only_cleanly() -> None:
    result = load_benchmark("chaos").run(faults=8, seed=7, gap=1.0)
    assert result["faults_injected"] == 8, result
    assert result["injector_errors"] == [] and result["chain_died"] == [], result
    assert result["datasets_published"] >= 1 and result["operations_succeeded"] >= 1, result
    assert result["operations_failed_uncleanly"] == 0, result["unclean_examples"]
    assert result["data_lost"] == 0 and result["wrong_bytes"] == 0, result
    assert result["duplicates"] == 0, result
    assert result["restarts"].get("chain", 0) >= 1, result  # the chain was killed, came back
    assert result["catalog_missing"] == 0, result
    assert result["parts_not_back"] == [], result
    # Every killed part was seen answering /health again.
    assert result["kills_not_recovered"] == [], result
