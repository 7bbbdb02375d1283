"""A compute-to-data algorithm: counts rows and positives, next to the data.

The owner's compute node calls ``run`` in a sandbox (no network, resource limits);
``inputs`` maps each dataset to an item with ``.path`` (the decrypted file) and
``.frame`` (a pandas DataFrame for CSV or Parquet); only ``output_dir`` comes back.
"""

import json


def run(inputs, params, output_dir):
    (item,) = inputs.values()
    frame = item.frame
    target = params.get("target", "label")
    summary = {"rows": len(frame), "positives": int(frame[target].sum())}
    (output_dir / "count.json").write_text(json.dumps(summary))
    print("counted", summary["rows"], "rows")
