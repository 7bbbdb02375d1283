"""The PROV export of a story: the right records, and a lossless round trip through `prov`."""

from __future__ import annotations

import io
from pathlib import Path

import prov
from prov.model import ProvDocument
from story import Story

from datagora.audit import prov_json, timeline, to_prov, write_prov
from datagora.ledger import Ledger
from helpers import BUYER, OTHER, OWNER


def test_prov_records_and_round_trip(told: tuple[Ledger, Story], tmp_path: Path) -> None:
    embedded_ledger, story = told
    entries = timeline(embedded_ledger, story.dataset)
    doc = to_prov(embedded_ledger, story.dataset, entries)
    ns = "https://datagora.org/ns/"
    records = doc.get_records()
    ids = {str(r.identifier.uri) for r in records if r.identifier is not None}
    v1, v2 = f"{ns}dataset/{story.dataset}/v1", f"{ns}dataset/{story.dataset}/v2"
    assert {v1, v2, f"{ns}dataset/{story.dataset}/nft"} <= ids
    assert {f"{ns}account/{a.address}" for a in (OWNER, BUYER, OTHER)} <= ids
    derivations = [
        (str(r.formal_attributes[0][1].uri), str(r.formal_attributes[1][1].uri))
        for r in records
        if r.get_type().localpart == "Derivation"
    ]
    assert (v2, v1) in derivations
    kinds = sorted(
        str(r.get_asserted_types().pop().localpart)
        for r in records
        if r.get_type().localpart == "Activity"
    )
    assert kinds.count("order") == 2 and kinds.count("request") == 2
    assert {"publish", "update", "grant", "deny", "revoke", "transfer", "state"} <= set(kinds)
    assert any(r.get_type().localpart == "Invalidation" for r in records)

    text = prov_json(doc)
    assert ProvDocument.deserialize(content=text, format="json") == doc
    path = tmp_path / "history.json"
    write_prov(doc, path)
    assert prov.read(io.StringIO(path.read_text()), format="json") == doc
    # And the comparison is not vacuous: another dataset's document differs.
    assert to_prov(embedded_ledger, story.other) != doc
