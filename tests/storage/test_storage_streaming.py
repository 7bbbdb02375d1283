"""Memory stays bounded by the chunk pipeline, whatever the file size.

Runs a 64 MiB encode -> disk -> decode in a fresh interpreter (so the peak RSS
measured is this pipeline's alone) and checks the peak grows by far less than the
file size. Data is generated on the fly and never held whole.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SIZE_MIB = 64
# Two plaintext chunks of look-ahead, the ciphertext, the blocks and the shares of
# one 1 MiB chunk are ~7 MiB; the rest is allocator slack. Holding the file would
# cost >= 64 MiB.
MAX_GROWTH_MIB = 32

SCRIPT = textwrap.dedent(
    """
    import hashlib, io, json, random, resource, sys
    from pathlib import Path
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from datagora.crypto.aead import DataKey
    from datagora.crypto.sealed import unwrap_data_key, wrap_data_key
    from datagora.storage import (
        EncodingParams, ManifestBuilder, decode_stream, encode_stream, new_dataset_id,
        verify_manifest,
    )

    size, workdir = int(sys.argv[1]), Path(sys.argv[2])

    class Generated(io.RawIOBase):
        # Pseudo-random bytes made as they are read; hashes what it hands out.
        def __init__(self, size):
            self.left, self.rng, self.digest = size, random.Random(7), hashlib.sha256()
        def readable(self):
            return True
        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            data = self.rng.randbytes(n)
            buffer[:n] = data
            self.digest.update(data)
            self.left -= n
            return n

    class HashSink(io.RawIOBase):
        def __init__(self):
            self.digest = hashlib.sha256()
        def writable(self):
            return True
        def write(self, data):
            self.digest.update(data)
            return len(data)

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def run(size, tag):
        owner = X25519PrivateKey.generate()
        params = EncodingParams(new_dataset_id(), 1, chunk_size=1 << 20, k=4, n=6)
        key = DataKey.generate()
        builder = ManifestBuilder(params)
        src = Generated(size)
        shares_dir = workdir / tag
        shares_dir.mkdir()
        for chunk in encode_stream(io.BufferedReader(src), params, key):
            builder.add(chunk)
            for share in chunk.shares:
                (shares_dir / share.name).write_bytes(share.data)
            del chunk
        manifest = builder.build(wrap_data_key(key, owner.public_key(), params.dataset_id, 1))
        verified = verify_manifest(manifest.to_bytes(), manifest.digest())
        key = unwrap_data_key(manifest.wrapped_key, owner, params.dataset_id, 1)

        def shares_by_chunk():
            for c, record in enumerate(manifest.chunks):
                # Parity shares on purpose: decoding from them does real zfec work.
                yield [
                    verified.verify_share(c, j, (shares_dir / record.shares[j].hex()).read_bytes())
                    for j in (5, 4, 1, 0)
                ]

        sink = HashSink()
        written = decode_stream(verified, key, shares_by_chunk(), sink)
        assert written == size
        return src.digest.digest() == sink.digest.digest()

    run(3 << 20, "warmup")
    before = peak_mib()
    same = run(size, "big")
    print(json.dumps({"before_mib": before, "after_mib": peak_mib(), "same": same}))
    """
)


def test_peak_rss_growth_is_bounded_by_the_chunk_pipeline(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(SIZE_MIB << 20), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["same"], "the decoded bytes differ from the generated input"
    growth = report["after_mib"] - report["before_mib"]
    assert growth < MAX_GROWTH_MIB, f"peak RSS grew by {growth:.1f} MiB for {SIZE_MIB} MiB"
