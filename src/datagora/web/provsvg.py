"""A W3C PROV document drawn as an SVG picture, server-side, with no graphviz.

The layout is layered: each node's column is its depth along the PROV relations
(a relation points from the later record to the earlier one: `wasGeneratedBy`
entity -> activity, `used` activity -> entity, ...), so time flows left to right;
agents sit in a row of their own below. Every label is escaped text; the picture
has a ``<title>`` and ``<desc>`` for screen readers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from html import escape

from prov.model import ProvActivity, ProvAgent, ProvDocument, ProvElement, ProvEntity, ProvRelation

__all__ = ["prov_svg"]

NODE_W = 170
NODE_H = 40
GAP_X = 60
GAP_Y = 22
MARGIN = 16
MAX_NODES = 400
"""Beyond this many nodes the picture is cut (a note says so): a browser still draws it."""

_FILL = {"entity": "#fff4c2", "activity": "#cfe3ff", "agent": "#ffd9c2"}
_STROKE = {"entity": "#7a5d00", "activity": "#1d4f91", "agent": "#8a3b00"}


@dataclass
class _Node:
    ident: str
    kind: str
    label: str
    depth: int = 0
    x: int = 0
    y: int = 0


def _short(ident: str) -> str:
    local = ident.split(":", 1)[-1]
    if local.startswith("account/"):
        addr = local.removeprefix("account/")
        return f"account {addr[:6]}…{addr[-4:]}"
    if local.startswith("tx/"):
        return "tx " + local.removeprefix("tx/")[:10] + "…"
    return local


def _kind(rec: ProvElement) -> str:
    if isinstance(rec, ProvActivity):
        return "activity"
    if isinstance(rec, ProvAgent):
        return "agent"
    return "entity"


def _label(rec: ProvElement) -> str:
    types = [str(v).split(":", 1)[-1] for v in rec.get_attribute("prov:type")]
    head = types[0] if types else _kind(rec)
    if isinstance(rec, ProvEntity | ProvAgent):
        return f"{head}: {_short(str(rec.identifier))}"
    return head


def _clip(text: str, limit: int = 26) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def prov_svg(doc: ProvDocument, title: str = "Provenance graph") -> str:
    """The SVG text of `doc`: entities (yellow), activities (blue), agents (orange)."""
    nodes: dict[str, _Node] = {}
    edges: list[tuple[str, str, str]] = []
    for rec in doc.get_records():
        if isinstance(rec, ProvElement):
            ident = str(rec.identifier)
            nodes[ident] = _Node(ident, _kind(rec), _label(rec))
    for rec in doc.get_records(ProvRelation):
        ends = [v for _, v in rec.formal_attributes[:2]]
        if len(ends) == 2 and ends[0] is not None and ends[1] is not None:
            name = type(rec).__name__.removeprefix("Prov")
            edges.append((str(ends[0]), str(ends[1]), name[0].lower() + name[1:]))
    cut = len(nodes) > MAX_NODES
    if cut:
        nodes = dict(list(nodes.items())[:MAX_NODES])
    edges = [e for e in edges if e[0] in nodes and e[1] in nodes]

    # Depth of a non-agent node: 1 + the deepest node it points to (earlier records).
    points_to: dict[str, list[str]] = defaultdict(list)
    for src, dst, _ in edges:
        if nodes[src].kind != "agent" and nodes[dst].kind != "agent":
            points_to[src].append(dst)
    depth: dict[str, int] = {}

    def depth_of(ident: str, seen: frozenset[str] = frozenset()) -> int:
        if ident in depth:
            return depth[ident]
        if ident in seen:  # PROV documents may hold cycles: cut them
            return 0
        value = 1 + max((depth_of(d, seen | {ident}) for d in points_to.get(ident, [])), default=-1)
        depth[ident] = value
        return value

    columns: dict[int, list[_Node]] = defaultdict(list)
    agents: list[_Node] = []
    for node in nodes.values():
        if node.kind == "agent":
            agents.append(node)
        else:
            node.depth = depth_of(node.ident)
            columns[node.depth].append(node)
    rows = max((len(c) for c in columns.values()), default=0)
    for col, members in columns.items():
        for row, node in enumerate(members):
            node.x = MARGIN + col * (NODE_W + GAP_X)
            node.y = MARGIN + row * (NODE_H + GAP_Y)
    agent_y = MARGIN + rows * (NODE_H + GAP_Y) + GAP_Y
    for i, node in enumerate(agents):
        node.x = MARGIN + i * (NODE_W + GAP_X // 2)
        node.y = agent_y
    width = max(
        [MARGIN + (max(columns, default=0) + 1) * (NODE_W + GAP_X)]
        + [n.x + NODE_W + MARGIN for n in agents]
    )
    height = agent_y + (NODE_H + MARGIN if agents else 0) + (20 if cut else 0)

    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="prov-title '
        f'prov-desc" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        f'<title id="prov-title">{escape(title)}</title>',
        f'<desc id="prov-desc">{len(nodes)} records and {len(edges)} relations: entities '
        "are yellow boxes, activities blue, agents orange; arrows point from a record to "
        "the one it derives from, used, or was generated by.</desc>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#444"/></marker></defs>',
    ]
    for src, dst, name in edges:
        a, b = nodes[src], nodes[dst]
        x1, y1 = a.x, a.y + NODE_H // 2
        x2, y2 = b.x + NODE_W, b.y + NODE_H // 2
        if b.kind == "agent" or a.kind == "agent":
            x1, y1 = a.x + NODE_W // 2, a.y + (0 if a.kind == "agent" else NODE_H)
            x2, y2 = b.x + NODE_W // 2, b.y + (0 if b.kind == "agent" else NODE_H)
        out.append(
            f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#555" stroke-width="1" '
            f'marker-end="url(#arrow)"><title>{escape(name)}</title></line>'
        )
    for node in nodes.values():
        shape = (
            f'<rect x="{node.x}" y="{node.y}" width="{NODE_W}" height="{NODE_H}" rx="'
            f'{NODE_H // 2 if node.kind == "activity" else 3}" fill="{_FILL[node.kind]}" '
            f'stroke="{_STROKE[node.kind]}"/>'
        )
        out.append(
            f'<g class="prov-{node.kind}"><title>{escape(node.ident)}</title>{shape}'
            f'<text x="{node.x + 8}" y="{node.y + NODE_H // 2 + 4}" fill="#111">'
            f"{escape(_clip(node.label))}</text></g>"
        )
    if cut:
        out.append(
            f'<text x="{MARGIN}" y="{height - 6}" fill="#111">Only the first {MAX_NODES} '
            "records are drawn: download the PROV-JSON for all of them.</text>"
        )
    out.append("</svg>")
    return "\n".join(out)
