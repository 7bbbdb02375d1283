"""The `datagora` commands that read the catalog: `search` and `show`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from datagora.bodies import refusal_text
from datagora.cli.common import (
    JsonFlag,
    format_amount,
    format_list,
    out,
    parse_amount,
    print_fields,
    print_json,
    short_hex,
)
from datagora.errors import ConfigError, NotFoundError, Unreachable

commands = typer.Typer()


def _catalog_url(catalog: str | None) -> str:
    if catalog:
        return catalog.rstrip("/")
    from datagora.node.network import load_network

    url = load_network().catalog
    if not url:
        raise ConfigError("the network has no catalog: pass --catalog URL")
    return url.rstrip("/")


def _catalog_get(url: str, path: str, params: dict[str, Any] | None = None) -> Any:
    import httpx

    try:
        r = httpx.get(url + path, params=params, timeout=10)
    except httpx.HTTPError as exc:
        raise Unreachable(f"cannot reach the catalog at {url}: {exc}", url) from None
    if r.status_code == 404:
        raise NotFoundError(r.json().get("detail", "not found"))
    if r.status_code >= 400:
        detail = (
            refusal_text(r.json(), r.text)
            if r.headers.get("content-type", "").startswith("application/json")
            else r.text
        )
        raise ConfigError(f"the catalog refused the request: {detail}")
    return r.json()


CatalogOption = Annotated[
    str | None, typer.Option(help="Catalog URL (default: the network file's).")
]


@commands.command()
def search(
    query: Annotated[str, typer.Argument(help="Words to look for (prefixes match).")] = "",
    tag: Annotated[
        list[str] | None, typer.Option(help="Only datasets with this tag (repeat).")
    ] = None,
    license: Annotated[str | None, typer.Option(help="Only this license.")] = None,
    min_price: Annotated[str | None, typer.Option(help="Minimum price in MarketTokens.")] = None,
    max_price: Annotated[str | None, typer.Option(help="Maximum price in MarketTokens.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only datasets held by this address.")] = None,
    service: Annotated[
        str | None,
        typer.Option(help="download, compute, or dp (compute with differential privacy)."),
    ] = None,
    has_mock: Annotated[
        bool | None, typer.Option("--has-mock/--no-mock", help="With mock data.")
    ] = None,
    sort: Annotated[
        str, typer.Option(help="relevance, newest, oldest, price_asc, price_desc, orders.")
    ] = "relevance",
    limit: Annotated[int, typer.Option(help="Results per page (1-100).")] = 20,
    offset: Annotated[int, typer.Option(help="Results to skip.")] = 0,
    catalog: CatalogOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Search the catalog.

    Example: datagora search "breast cancer" --tag medical --max-price 5
    """
    params: dict[str, Any] = {"q": query, "sort": sort, "limit": limit, "offset": offset}
    for name, value in (
        ("license", license),
        ("min_price", _tokens(min_price, "--min-price")),
        ("max_price", _tokens(max_price, "--max-price")),
        ("owner", owner),
        ("service", service),
        ("has_mock", has_mock),
    ):
        if value is not None:
            params[name] = value
    if tag:
        params["tag"] = tag
    result = _catalog_get(_catalog_url(catalog), "/datasets", params)
    if as_json:
        print_json(result)
        return
    from rich.table import Table

    table = Table("id", "title", "tags", "license", "price", "services", "orders")
    for item in result["items"]:
        table.add_row(
            str(item["id"]),
            item["title"],
            format_list(item["tags"], ""),
            item["license"],
            _price(item),
            format_list(item["services"], ""),
            str(item["orders"]),
        )
    out.print(table)
    out.print(f"{result['total']} dataset(s)")


def _tokens(text: str | None, what: str) -> str | None:
    """A price filter as typed (tokens, checked like every amount), as the catalog takes it."""
    return None if text is None else format_amount(parse_amount(text, what), None)


def _price(item: dict[str, Any]) -> str:
    if item.get("pricing") == "free":
        return "free"
    if item.get("pricing") == "fixed" and item.get("price") is not None:
        return format_amount(int(item["price"]))
    return "on request" if item.get("pricing") == "none" else "-"


def _hash(value: Any) -> str:
    """A catalog hash (hex, with or without 0x) as ``0x1234…abcd``."""
    if not value:
        return "-"
    text = str(value)
    return short_hex(text if text.startswith("0x") else "0x" + text)


@commands.command()
def show(
    dataset: Annotated[int, typer.Argument(help="The dataset id.")],
    catalog: CatalogOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Show everything the catalog knows about a dataset.

    Example: datagora show 3
    """
    details = _catalog_get(_catalog_url(catalog), f"/datasets/{dataset}")
    if as_json:
        print_json(details)
        return
    fields: dict[str, Any] = {
        "id": details.get("id"),
        "title": details.get("title"),
        "description": details.get("description") or "-",
        "owner": details.get("owner"),
        "license": details.get("license"),
        "tags": format_list(details.get("tags") or []),
        "price": _price(details),
        "services": format_list(details.get("services") or []),
        "version": details.get("version"),
        "orders": details.get("orders"),
        "metadata hash": _hash(details.get("metadata_hash")),
        "manifest hash": _hash(details.get("manifest_hash")),
        "merkle root": _hash(details.get("merkle_root")),
        "datatoken": details.get("datatoken"),
    }
    for c in details.get("conditions") or []:
        fields[f"access, service {c['service']}"] = (
            c["condition"] or "unreadable condition (proxies refuse everyone)"
        )
    print_fields(fields)
    for v in details.get("versions", []):
        out.print(
            f"  version {v['version']} at block {v['block']}: metadata {_hash(v['metadata_hash'])}",
            highlight=False,
        )
