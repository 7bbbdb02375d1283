"""Runs jobs through a Sandbox and prints what each left, as JSON: started by
test_compute_bwrap.py as an unprivileged user (``python sandbox_driver.py SPEC``).

SPEC is a JSON file: {"scratch", "hide", "limits", "inputs": {id: path}, "cases": {name: code}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from datagora.compute.sandbox import Limits, Sandbox


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    limits = Limits(**spec["limits"])
    sandbox = Sandbox(limits, scratch_dir=Path(spec["scratch"]), hide=spec["hide"])
    inputs = {int(k): Path(v) for k, v in spec["inputs"].items()}
    report: dict[str, object] = {"describe": sandbox.describe()}
    for name, code in spec["cases"].items():
        with sandbox.run(code.encode(), inputs, {}) as run:
            outputs = sorted(p.name for p in run.output_dir.iterdir())
            report[name] = {
                "ok": run.ok,
                "reason": run.reason,
                "stdout": run.stdout.decode(errors="replace"),
                "stderr": run.stderr.decode(errors="replace")[-2000:],
                "outputs": outputs[:10],
                "output_text": [
                    (run.output_dir / n).read_text(errors="replace")[:200] for n in outputs[:1]
                ],
            }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
