"""Presenting audits: a rich table of a timeline, plain lines, and a report as JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from datagora.audit.timeline import TimelineEntry
from datagora.audit.verify import VerifyReport
from datagora.display import format_time, short_hex, shorten_hexes


def timeline_lines(entries: Sequence[TimelineEntry]) -> list[str]:
    """One plain line per entry: block, UTC time, kind, description, transaction."""
    return [
        f"{e.block_number:>8}  {e.time:%Y-%m-%d %H:%M:%S}Z  {e.kind.value:<10}  {e.text}  "
        f"[{e.tx_hash}]"
        for e in entries
    ]


def render_timeline(entries: Sequence[TimelineEntry], title: str | None = None) -> Table:
    """A rich table of the timeline, for ``datagora audit DATASET``: addresses and hashes
    shortened (``0x1234…abcd``) so it reads at 80 columns; ``--json`` has them whole."""
    table = Table(title=title, show_lines=False)
    table.add_column("block", justify="right", no_wrap=True)
    table.add_column("time (UTC)")
    table.add_column("what happened", overflow="fold", ratio=1)
    table.add_column("tx", no_wrap=True)
    for e in entries:
        what = Text(e.kind.value + ":", style="bold")
        what.append(" " + shorten_hexes(e.text))
        table.add_row(str(e.block_number), format_time(e.timestamp), what, short_hex(e.tx_hash))
    return table


def report_to_dict(report: VerifyReport) -> dict[str, Any]:
    """A JSON-ready dict of a verification report."""
    return {
        "dataset": report.dataset,
        "versions": report.versions,
        "ok": report.ok,
        "complete": report.complete,
        "checked": len(report.checked),
        "mismatches": len(report.mismatches),
        "unavailable": len(report.unavailable),
        "checks": [
            {
                "version": c.version,
                "subject": c.subject,
                "status": c.status.value,
                "expected": c.expected,
                "source": c.source,
                "reason": c.reason,
            }
            for c in report.checks
        ],
        "notes": list(report.notes),
    }


def report_to_json(report: VerifyReport) -> str:
    """A verification report as JSON text."""
    return json.dumps(report_to_dict(report), indent=2)
