"""Audit: a dataset's history from the ledger alone, hash verification, W3C PROV export.

>>> entries = timeline(ledger, 1)                       # every event, in chain order
>>> report = verify(ledger, 1, ["http://storage:8500"])  # recompute every hash
>>> doc = to_prov(ledger, 1)                             # W3C PROV document
"""

from datagora.audit.errors import AuditError, DatasetNotFound, LogQueryError
from datagora.audit.prov import prov_json, to_prov, write_prov
from datagora.audit.render import render_timeline, report_to_dict, report_to_json, timeline_lines
from datagora.audit.timeline import (
    DatasetVersion,
    Holding,
    Kind,
    TimelineEntry,
    describe,
    holders,
    timeline,
    versions,
)
from datagora.audit.verify import Check, Status, VerifyReport, verify

__all__ = [
    "AuditError",
    "Check",
    "DatasetNotFound",
    "DatasetVersion",
    "Holding",
    "Kind",
    "LogQueryError",
    "Status",
    "TimelineEntry",
    "VerifyReport",
    "describe",
    "holders",
    "prov_json",
    "render_timeline",
    "report_to_dict",
    "report_to_json",
    "timeline",
    "timeline_lines",
    "to_prov",
    "verify",
    "versions",
    "write_prov",
]
