"""Publish and retrieve speed through real storage node processes on loopback.

``run`` starts ``nodes`` storage node processes, writes ``size_mb`` MB of fresh random
data to disk, and in a separate client process uploads it (encrypt + erasure code +
hash + PUT to the nodes) and downloads it back (GET + verify + decode + decrypt +
write), checking the copy is byte-identical. The client's peak RSS is that
process's ``ru_maxrss``. The raw in-memory pipeline is measured in the same run,
and the ratios divide the real speeds by it. 1 MB = 2**20 bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks.storage_pipeline import measure_raw_pipeline
from datagora.testing.storage import LocalNodes

_MB = 1 << 20

_CLIENT = textwrap.dedent(
    """
    import hashlib, json, os, resource, sys, time
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from datagora.crypto.aead import DataKey
    from datagora.ledger import dev_account
    from datagora.storage.client import StorageClient
    from datagora.storage.pipeline import EncodingParams, new_dataset_id

    src, dst, chunk_size, k, n, concurrency, pids = sys.argv[1:8]
    nodes = sys.argv[8:]
    # Writes are signed (the nodes give the development accounts a quota).
    client = StorageClient(nodes, concurrency=int(concurrency), signer=dev_account(1))
    owner = X25519PrivateKey.generate()
    params = EncodingParams(new_dataset_id(), 1, chunk_size=int(chunk_size), k=int(k), n=int(n))
    key = DataKey.generate()

    def cpu():
        # CPU seconds of this client and of the node processes (Linux /proc), so
        # the work per MB shows even when a shared machine makes wall time noisy.
        own = resource.getrusage(resource.RUSAGE_SELF)
        total = own.ru_utime + own.ru_stime
        for pid in filter(None, pids.split(",")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                return float("nan")
        return total

    cpu0, started = cpu(), time.perf_counter()
    result = client.upload(src, params, key, owner.public_key())
    publish = time.perf_counter() - started
    cpu1, started = cpu(), time.perf_counter()
    report = client.download(result.manifest_hash, key, dst)
    retrieve = time.perf_counter() - started
    cpu2 = cpu()

    def digest(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return h.hexdigest()

    print(json.dumps({
        "publish_s": publish,
        "retrieve_s": retrieve,
        "publish_cpu_s": cpu1 - cpu0,
        "retrieve_cpu_s": cpu2 - cpu1,
        "identical": digest(src) == digest(dst),
        "bad_nodes": report.bad_nodes,
        "shares_fetched": report.shares_fetched,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))
    """
)


def _pids(cluster: LocalNodes) -> str:
    return ",".join(str(n.process.pid) for n in cluster.nodes if n.process is not None)


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        left = size
        while left:
            piece = os.urandom(min(left, _MB))
            out.write(piece)
            left -= len(piece)


def run(
    size_mb: int = 256,
    chunk_mb: int = 1,
    k: int = 4,
    n: int = 6,
    nodes: int = 6,
    concurrency: int = 16,
) -> dict[str, Any]:
    """Measure publish and retrieve through ``nodes`` local storage node processes.

    Returns a dict with ``raw_pipeline_mb_s``, ``publish_mb_s``,
    ``retrieve_mb_s``, ``publish_ratio``, ``retrieve_ratio``, ``peak_rss_mb``, ``k``,
    ``n``, ``chunk_size``, ``size_mb`` and ``nodes``; also the CPU seconds per MB
    that publishing and retrieving cost (client and node processes together,
    against the raw pipeline's), and the 1-minute load average before the run:
    on a shared machine wall-clock ratios move with other work, CPU per MB much
    less.
    """
    chunk_size = chunk_mb * _MB
    load = os.getloadavg()[0]
    measured = measure_raw_pipeline(size_mb, chunk_size, k, n)
    raw = measured["raw_pipeline_mb_s"]
    with tempfile.TemporaryDirectory(prefix="datagora-bench-") as tmp:
        work = Path(tmp)
        src, dst = work / "input.bin", work / "output.bin"
        _random_file(src, size_mb * _MB)
        with LocalNodes(nodes, work / "nodes", max_share_mb=max(64, 2 * chunk_mb)) as cluster:
            completed = subprocess.run(
                [
                    sys.executable, "-c", _CLIENT, str(src), str(dst), str(chunk_size),
                    str(k), str(n), str(concurrency), _pids(cluster), *cluster.urls,
                ],
                capture_output=True,
                text=True,
                check=False,
            )  # fmt: skip
        if completed.returncode != 0:
            raise RuntimeError(f"the benchmark client failed:\n{completed.stderr[-4000:]}")
        client = json.loads(completed.stdout)
    if not client["identical"]:
        raise RuntimeError("the retrieved file differs from the published one")
    publish = size_mb / client["publish_s"]
    retrieve = size_mb / client["retrieve_s"]
    result = {
        "raw_pipeline_mb_s": raw,
        "publish_mb_s": round(publish, 1),
        "retrieve_mb_s": round(retrieve, 1),
        "publish_ratio": round(publish / raw, 3),
        "retrieve_ratio": round(retrieve / raw, 3),
        "peak_rss_mb": round(client["peak_rss_mb"], 1),
        "publish_cpu_s_per_mb": round(client["publish_cpu_s"] / size_mb, 4),
        "retrieve_cpu_s_per_mb": round(client["retrieve_cpu_s"] / size_mb, 4),
        "raw_cpu_s_per_mb": round(measured["cpu_seconds"] / size_mb, 4),
        "load_avg_1m": round(load, 2),
        "k": k,
        "n": n,
        "chunk_size": chunk_size,
        "size_mb": size_mb,
        "nodes": nodes,
        "concurrency": concurrency,
        "shares_fetched": client["shares_fetched"],
        "bad_nodes": len(client["bad_nodes"]),
    }
    return result


if __name__ == "__main__":
    print(json.dumps(run(*(int(a) for a in sys.argv[1:])), indent=2))
