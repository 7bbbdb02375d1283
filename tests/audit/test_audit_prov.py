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


def _associations(doc: ProvDocument) -> dict[str, set[tuple[str, str]]]:
    """activity kind -> {(agent address, role)} of its associations."""
    kinds = {
        str(r.identifier): str(r.get_asserted_types().pop().localpart)
        for r in doc.get_records()
        if r.get_type().localpart == "Activity"
    }
    out: dict[str, set[tuple[str, str]]] = {}
    for r in doc.get_records():
        if r.get_type().localpart != "Association":
            continue
        attrs = dict(r.formal_attributes)
        activity, agent = str(attrs[r.FORMAL_ATTRIBUTES[0]]), str(attrs[r.FORMAL_ATTRIBUTES[1]])
        roles = [str(v.localpart) for k, v in r.attributes if str(k) == "prov:role"]
        out.setdefault(kinds[activity], set()).add(
            (agent.removeprefix("datagora:account/"), roles[0] if roles else "")
        )
    return out


def _attributed(doc: ProvDocument, suffix: str) -> set[str]:
    return {
        str(dict(r.formal_attributes)[r.FORMAL_ATTRIBUTES[1]]).removeprefix("datagora:account/")
        for r in doc.get_records()
        if r.get_type().localpart == "Attribution"
        and str(dict(r.formal_attributes)[r.FORMAL_ATTRIBUTES[0]]).endswith(suffix)
    }


def test_decisions_are_the_controllers_and_sales_are_there(told: tuple[Ledger, Story]) -> None:
    """The lie (of the old export): a grant attributed to the consumer who received it,
    grant/deny/revoke with no agent, and no sales at all."""
    ledger, story = told
    doc = to_prov(ledger, story.dataset)
    acts = _associations(doc)
    for kind in ("grant", "deny", "revoke"):
        assert acts[kind] == {(OWNER.address, "controller")}, (kind, acts.get(kind))
    assert _attributed(doc, "/grant") == {OWNER.address}
    assert (BUYER.address, "buyer") in acts["sale"]
    assert (OWNER.address, "seller") in acts["sale"]
    # The library reads its PROV-JSON back to the same document, and writes PROV-N.
    assert ProvDocument.deserialize(content=prov_json(doc), format="json") == doc
    assert "actedOnBehalfOf" not in doc.get_provn()  # the holder acted itself
