"""The marketplace's web pages (`datagora node --roles web`): browse, dataset, account.

Server-rendered HTML (Jinja2) that reads without JavaScript: the catalog over its
HTTP API, the chain through the ledger's views and the audit timeline. Actions are
the visitor's own: the page's script asks the visitor's wallet (EIP-1193,
``window.ethereum``) to send transactions or sign the EIP-712 requests the CLI
signs. The node never holds a key; it forwards a signed owner request to the
compute node (it cannot forge one) and serves its assets itself, from the npm
packages the project installs (nothing from a CDN).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi import Query as QueryParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from datagora.bodies import Refusal, read_capped, why
from datagora.display import format_amount, format_time, short_hex
from datagora.errors import DatagoraError

if TYPE_CHECKING:
    from datagora.ledger import Ledger

__all__ = ["WebConfig", "create_web_app", "find_node_modules"]

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 20
GRANT_DAYS = 30
MAX_FORWARD_BYTES = 64 << 10
MAX_HEALTH_CHECKS = 24
_HEX64 = re.compile("[0-9a-f]{64}")
_MAX_ID = 2**63 - 1
DatasetId = Annotated[int, PathParam(ge=0, le=_MAX_ID, description="A dataset id.")]
JobId = Annotated[int, PathParam(ge=0, le=_MAX_ID, description="A job id.")]
NodeIndex = Annotated[int, PathParam(ge=0, le=255, description="The node's place in the list.")]
_Responses = dict[int | str, dict[str, Any]]


def _page_refusal(text: str) -> dict[str, Any]:
    """A refusal a page route answers: the error page (HTML), or FastAPI's JSON list of
    invalid fields for a malformed parameter."""
    return {
        "description": text,
        "content": {
            "text/html": {"schema": {"type": "string"}},
            "application/json": {"schema": Refusal.model_json_schema()},
        },
    }


_PAGE: Final[_Responses] = {
    422: _page_refusal("A malformed parameter (the page, or FastAPI's list of fields)."),
    502: _page_refusal("The catalog did not answer, or answered with an error."),
}
_API: Final[_Responses] = {422: why("A malformed parameter.")}
_FORWARDED: Final[_Responses] = {
    **{
        code: why(f"The compute node's own answer, passed on ({code}).")
        for code in (400, 401, 403, 404, 409, 413, 422, 429)
    },
    413: why(f"The body is larger than {MAX_FORWARD_BYTES} bytes."),
    502: why("The compute node did not answer."),
    503: why("This web node knows no compute node."),
}
_RELAYED: Final[_Responses] = {
    **{code: why(f"The node's own answer, passed on ({code}).") for code in (400, 401, 403, 409)},
    404: why("This network has no such node, or the node holds no such thing."),
    413: why(f"The body is larger than {MAX_FORWARD_BYTES} bytes."),
    422: why("A malformed parameter or body."),
    502: why("The node did not answer."),
    503: why("The node cannot serve now."),
}
_SORTS = {
    "relevance": "relevance",
    "newest": "newest",
    "oldest": "oldest",
    "price_asc": "price (low first)",
    "price_desc": "price (high first)",
    "orders": "most ordered",
}
_SERVICES = {
    "download": "download",
    "compute": "compute",
    "dp": "compute with differential privacy",
}
# Assets served from npm packages: (URL prefix, package directory under node_modules).
VENDOR = {
    "ethers": "ethers/dist",
    "htmx": "htmx.org/dist",
    "umbral": "@nucypher/umbral-pre/pkg-bundler",
}


def find_node_modules() -> Path | None:
    """The node_modules holding the page's npm packages: $DATAGORA_NODE_MODULES, or the
    project's own (next to pyproject.toml above this package, or in the working directory)."""
    import os

    explicit = os.environ.get("DATAGORA_NODE_MODULES")
    candidates = [Path(explicit)] if explicit else []
    candidates += [p / "node_modules" for p in HERE.parents] + [Path.cwd() / "node_modules"]
    for candidate in candidates:
        if (candidate / "ethers" / "dist").is_dir():
            return candidate
    return None


@dataclass
class WebConfig:
    """What the pages read and where the visitor's page sends its requests."""

    catalog: str
    rpc: str | None = None
    deployment: Path | None = None
    proxies: list[str] = field(default_factory=list)
    threshold: int = 1
    storage: list[str] = field(default_factory=list)
    compute: str | None = None
    node_modules: Path | None = None
    ledger_factory: Any = None
    """Tests and the bench hand a ready ledger; else one is connected from rpc/deployment."""

    @cached_property
    def ledger(self) -> Ledger | None:
        if self.ledger_factory is not None:
            return self.ledger_factory()  # type: ignore[no-any-return]
        if self.rpc is None or self.deployment is None:
            return None
        from datagora.ledger import Ledger

        return Ledger.connect(self.rpc, self.deployment)


def _tokens(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise HTTPException(422, f"price {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise HTTPException(422, f"price {value!r} must be zero or more")
    return float(number)


def format_size(size: int | None) -> str:
    """Bytes as people read them (decimal units), or "unknown" before the catalog knows."""
    if size is None:
        return "unknown"
    if size < 1000:
        return f"{size} byte{'' if size == 1 else 's'}"
    value, units = float(size) / 1000, ["kB", "MB", "GB", "TB", "PB", "EB"]
    while value >= 999.5 and len(units) > 1:  # 2**63 bytes is 9.22 EB
        value, units = value / 1000, units[1:]
    return f"{value:.3g} {units[0]}"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("datagora.web", "templates"),
        autoescape=select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["amount"] = lambda v: format_amount(int(v or 0))
    env.filters["when"] = lambda v: format_time(int(v)) if v else ""
    env.filters["short"] = lambda v: short_hex(str(v)) if v else ""
    env.filters["size"] = format_size
    return env


def _offline(what: str, exc: Exception) -> HTTPException:
    return HTTPException(502, f"the {what} did not answer: {type(exc).__name__}")


def create_web_app(config: WebConfig) -> FastAPI:
    """The web role's app."""
    env = _environment()
    client = httpx.Client(timeout=30.0)
    app = FastAPI(title="datagora web", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    modules = config.node_modules or find_node_modules()
    if modules is not None:
        for prefix, sub in VENDOR.items():
            if (modules / sub).is_dir():
                app.mount(f"/vendor/{prefix}", StaticFiles(directory=modules / sub), name=prefix)

    def render(name: str, request: Request, status: int = 200, **context: Any) -> HTMLResponse:
        ledger = config.ledger
        page = env.get_template(name).render(
            request=request,
            chain_id=ledger.chain.chain_id if ledger else None,
            has_wallet_assets=modules is not None,
            **context,
        )
        return HTMLResponse(page, status_code=status)

    def catalog_get(path: str, params: list[tuple[str, Any]] | None = None) -> Any:
        try:
            r = client.get(f"{config.catalog.rstrip('/')}{path}", params=params)
        except httpx.HTTPError as exc:
            raise _offline("catalog", exc) from None
        if r.status_code == 404:
            return None
        if r.status_code >= 400:
            detail = (
                r.json().get("detail")
                if r.headers.get("content-type", "").startswith("application/json")
                else r.text
            )
            raise HTTPException(r.status_code if r.status_code < 500 else 502, str(detail))
        return r.json()

    @app.exception_handler(HTTPException)
    async def _error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return render("error.html", request, exc.status_code, message=str(exc.detail))

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"role": "web", "catalog": config.catalog, "wallet_assets": modules is not None}

    @app.get("/", response_class=HTMLResponse, responses=_PAGE)
    def browse(request: Request) -> HTMLResponse:
        qp = request.query_params
        q = qp.get("q", "")[:500]
        tags = [t for t in qp.getlist("tag") for t in t.split(",") if t.strip()][:16]
        sort = qp.get("sort", "relevance")
        if sort not in _SORTS:
            raise HTTPException(422, f"sort must be one of {', '.join(_SORTS)}")
        try:
            page = max(1, int(qp.get("page", "1")))
        except ValueError:
            raise HTTPException(422, "page must be a number") from None
        params: list[tuple[str, Any]] = [("q", q), ("sort", sort), ("limit", PAGE_SIZE)]
        params += [("offset", (page - 1) * PAGE_SIZE)]
        params += [("tag", t.strip().lower()) for t in tags]
        license_ = qp.get("license", "").strip()
        if license_:
            params.append(("license", license_))
        low, high = _tokens(qp.get("min_price")), _tokens(qp.get("max_price"))
        if low is not None:
            params.append(("min_price", low))
        if high is not None:
            params.append(("max_price", high))
        cost = qp.get("cost", "")
        if cost == "free":
            params.append(("pricing", "free"))
        elif cost == "paid":
            params.append(("pricing", "fixed"))
        elif cost:
            raise HTTPException(422, "cost is free or paid")
        service = qp.get("service", "")
        if service in _SERVICES:
            params.append(("service", service))
        elif service:
            raise HTTPException(422, f"service is one of {', '.join(_SERVICES)}")
        result = catalog_get("/datasets", params) or {"total": 0, "items": []}
        items = result["items"]
        base = [(k, v) for k, v in qp.multi_items() if k != "page"]
        pages = max(1, -(-int(result["total"]) // PAGE_SIZE))
        return render(
            "browse.html",
            request,
            q=q,
            tags=", ".join(tags),
            license=license_,
            min_price=qp.get("min_price", ""),
            max_price=qp.get("max_price", ""),
            cost=cost,
            service=service,
            services=_SERVICES,
            sort=sort,
            sorts=_SORTS,
            items=items,
            total=result["total"],
            page=page,
            pages=pages,
            prev_url="/?" + urlencode([*base, ("page", page - 1)]) if page > 1 else None,
            next_url="/?" + urlencode([*base, ("page", page + 1)]) if page < pages else None,
        )

    def _timeline(dataset: int) -> tuple[list[Any], str | None, str | None]:
        ledger = config.ledger
        if ledger is None:
            return [], None, "this web node has no chain (--rpc, --deployment)"
        from datagora.audit import AuditError, timeline, to_prov
        from datagora.web.provsvg import prov_svg

        try:
            entries = timeline(ledger, dataset)
            svg = prov_svg(to_prov(ledger, dataset, entries), f"Provenance of dataset {dataset}")
        except AuditError as exc:
            return [], None, str(exc)
        return entries, svg, None

    def _services(dataset: int, details: dict[str, Any]) -> list[dict[str, Any]]:
        meta = details.get("metadata") or {}
        ledger = config.ledger
        services = []
        now = int(time.time())
        token = None
        if ledger is not None:
            try:
                token = ledger.datatoken(dataset)
                now = ledger.chain.timestamp()
            except DatagoraError:  # the page still shows the metadata
                token = None
        for s in meta.get("services", []):
            entry = dict(s)
            entry["price_text"] = format_amount(int(s.get("price", "0")))
            if token is not None and ledger is not None:
                sid = int(s["id"])
                try:
                    units = token.service_units(sid)
                    timeout = token.service_timeout(sid)
                    entry["units"] = units
                    entry["open"] = timeout > 0
                    entry["min_expires_at"] = now + timeout
                    if details.get("pricing") == "fixed":
                        entry["max_price"] = str(ledger.exchange.quote(dataset, units).total)
                        entry["price_text"] = format_amount(int(entry["max_price"]))
                except DatagoraError:  # a closed or odd service: shown, not offered
                    entry["open"] = False
            services.append(entry)
        return services

    def _mock_preview(details: dict[str, Any]) -> str | None:
        mock = (details.get("metadata") or {}).get("mock")
        if not mock:
            return None
        from datagora.catalog.resolver import MetadataResolver

        resolver = MetadataResolver(config.storage, deadline=10.0, allow_private=True)
        try:
            raw = resolver.fetch(mock["uri"], bytes.fromhex(mock["sha256"]), 16 << 20)
        finally:
            resolver.close()
        if raw is None:
            return None
        text = raw[:4096].decode("utf-8", errors="replace")
        return "\n".join(text.splitlines()[:12])

    @app.get(
        "/datasets/{dataset}",
        response_class=HTMLResponse,
        responses={**_PAGE, 404: _page_refusal("No such dataset in the catalog.")},
    )
    def dataset_page(dataset: DatasetId, request: Request) -> HTMLResponse:
        if not 0 < dataset < 2**63:
            raise HTTPException(404, f"no dataset {dataset}")
        details = catalog_get(f"/datasets/{dataset}")
        if details is None:
            raise HTTPException(404, f"no dataset {dataset} in the catalog (yet)")
        entries, svg, timeline_error = _timeline(dataset)
        on_chain = None
        if config.ledger is not None:
            try:
                on_chain = config.ledger.data_nft.get_dataset(dataset)
            except DatagoraError:  # the page still shows the catalog's view
                on_chain = None
        return render(
            "dataset.html",
            request,
            d=details,
            meta=details.get("metadata") or {},
            services=_services(dataset, details),
            mock=_mock_preview(details),
            entries=entries,
            prov_svg=svg,
            timeline_error=timeline_error,
            grant_expires=int(time.time()) + GRANT_DAYS * 86_400,
            chain={
                "version": on_chain.version,
                "manifest": on_chain.manifest_hash.hex(),
                "root": on_chain.merkle_root.hex(),
            }
            if on_chain is not None
            else None,
        )

    @app.get(
        "/datasets/{dataset}/prov.svg",
        response_class=Response,
        responses={
            200: {"description": "The provenance graph.", "content": {"image/svg+xml": {}}},
            404: _page_refusal("No such dataset on chain, or no chain."),
            422: _PAGE[422],
        },
    )
    def prov_picture(dataset: DatasetId) -> Response:
        _, svg, error = _timeline(dataset)
        if svg is None:
            raise HTTPException(404, error or f"no dataset {dataset}")
        return Response(svg, media_type="image/svg+xml")

    def _activity(account: str) -> dict[str, Any]:
        """The account's orders, requests and jobs, and, as an owner, the requests and
        jobs on its datasets and its sales, read from the chain's events."""
        ledger = config.ledger
        found: dict[str, Any] = {
            "orders": [], "requests": [], "jobs": [], "incoming": [], "reviews": [],
            "sales": [], "earned": 0,
        }  # fmt: skip
        if ledger is None:
            return found
        me = account.lower()
        owned = {
            int(d["id"]): d
            for d in (catalog_get("/datasets", [("owner", account), ("limit", 100)]) or {}).get(
                "items", []
            )
        }
        requests: dict[int, dict[str, Any]] = {}
        jobs: dict[int, dict[str, Any]] = {}
        for e in ledger.events():
            a = e.args
            if e.name == "OrderStarted" and str(a["consumer"]).lower() == me:
                found["orders"].append(
                    {"dataset": int(a["dataset"]), "service": int(a["service_id"]),
                     "expires_at": int(a["expires_at"]), "tx": e.tx_hash}
                )  # fmt: skip
            elif e.name == "AccessRequested":
                requests[int(a["request_id"])] = {
                    "id": int(a["request_id"]), "dataset": int(a["dataset"]),
                    "consumer": str(a["consumer"]), "purpose": str(a["purpose"]),
                    "status": "pending", "reason": "", "tx": e.tx_hash,
                }  # fmt: skip
            elif e.name in ("AccessGranted", "AccessDenied", "AccessRevoked"):
                req = requests.get(int(a["request_id"]))
                if req is not None:
                    req["status"] = {"AccessGranted": "granted", "AccessDenied": "denied"}.get(
                        e.name, "revoked"
                    )
                    req["reason"] = str(a.get("reason", ""))
            elif e.name == "JobRecorded":
                jobs[int(a["job"])] = {
                    "job": int(a["job"]), "dataset": int(a["dataset"]),
                    "consumer": str(a["consumer"]), "algorithm": bytes(a["algorithm"]).hex(),
                    "status": "pending" if int(a["status"]) == 1 else "approved",
                    "tx": e.tx_hash,
                }  # fmt: skip
            elif e.name == "JobDecided" and int(a["job"]) in jobs:
                jobs[int(a["job"])]["status"] = "approved" if a["approved"] else "denied"
            elif e.name == "JobCompleted" and int(a["job"]) in jobs:
                jobs[int(a["job"])]["status"] = "succeeded" if a["succeeded"] else "failed"
            elif e.name == "Bought" and str(a["publisher"]).lower() == me:
                found["sales"].append(
                    {"dataset": int(a["dataset"]), "buyer": str(a["buyer"]),
                     "total": int(a["total"]), "tx": e.tx_hash,
                     "earned": int(a["total"]) - int(a["market_fee"]) - int(a["protocol_fee"])}
                )  # fmt: skip
        for req in requests.values():
            if req["consumer"].lower() == me:
                found["requests"].append(req)
            if req["dataset"] in owned:
                found["incoming"].append(req)
        for job in jobs.values():
            if job["consumer"].lower() == me:
                found["jobs"].append(job)
            if job["dataset"] in owned:
                found["reviews"].append(job)
        # What reached the publisher: each sale's total less its fees.
        found["earned"] = sum(s["earned"] for s in found["sales"])
        found["owned"] = list(owned.values())
        return found

    def _health(endpoints: set[str]) -> dict[str, Any]:
        """Each endpoint's ``/health``, checked now (together: each waits at most 5 s)."""
        from concurrent.futures import ThreadPoolExecutor

        from datagora.node.status import check_node

        # At most MAX_HEALTH_CHECKS of them: a page must not wait on hundreds of nodes.
        chosen = sorted(endpoints)[:MAX_HEALTH_CHECKS]
        if not chosen:
            return {}
        with ThreadPoolExecutor(max_workers=min(8, len(chosen))) as pool:
            checks = pool.map(lambda url: check_node("node", url), chosen)
            return {c.url: c for c in checks}

    def _node_record(ledger: Ledger, address: str) -> dict[str, Any] | None:
        from datagora.ledger.errors import NotFound

        try:
            n = ledger.registry.node(address)
        except NotFound:
            return None
        return {
            "address": n.address, "roles": ", ".join(n.roles.names()), "endpoint": n.endpoint,
            "stake": n.stake, "state": n.state.name.lower(), "health": None,
        }  # fmt: skip

    def _storage(account: str) -> dict[str, Any]:
        """The storage deals `account` pays for, per node (proven, missed, paid), and, if
        `account` is a registered node, its record and what it earned in each deal; with
        every node's health. Deals are found through indexed topics (owner, node), not by
        reading every deal or event."""
        ledger = config.ledger
        out: dict[str, Any] = {"deals": [], "node": None, "node_deals": [], "storage_error": None}
        if ledger is None:
            return out
        try:
            _read_storage(ledger, account, out)
        except DatagoraError as exc:  # the rest of the page still shows
            out["storage_error"] = f"storage deals and nodes could not be read: {exc}"
        return out

    def _read_storage(ledger: Ledger, account: str, out: dict[str, Any]) -> None:
        deals = ledger.deals
        start = ledger.deployment.start_block
        now = ledger.chain.block_number
        records: dict[str, dict[str, Any] | None] = {}

        def record(address: str) -> dict[str, Any] | None:
            if address not in records:
                records[address] = _node_record(ledger, address)
            return records[address]

        if deals is not None:
            from datagora.market.deals import DealSummary

            opened = deals.find_events("DealOpened", None, None, account, start=start)
            for deal in sorted({int(e["deal"]) for e in opened}):
                info = deals.deal(deal)
                summary = DealSummary(info, tuple(deals.slots(deal))).to_json()
                closed = sum(1 for p in range(info.end_period) if now >= info.window_end(p))
                summary["closed_periods"] = closed
                summary["running"] = closed < info.end_period
                for slot in summary["nodes"]:
                    slot["unproven"] = (
                        max(0, closed - slot["proven"] - slot["missed"]) if slot["joined"] else 0
                    )
                    slot["record"] = record(slot["node"])
                out["deals"].append(summary)
        me = record(account)
        if me is not None:
            out["node"] = me
            if deals is not None:
                joined = deals.find_events("NodeJoined", None, None, account, start=start)
                for deal in sorted({int(e["deal"]) for e in joined}):
                    info, slot = deals.deal(deal), deals.slot_of(deal, account)
                    out["node_deals"].append(
                        {"deal": deal, "dataset": info.dataset, "proven": slot.proven,
                         "missed": slot.missed, "earned": slot.earned,
                         "slashed": slot.missed * info.terms.slash,
                         "collateral": slot.collateral,
                         "periods_left": max(0, info.end_period - slot.proven - slot.missed)}
                    )  # fmt: skip
        health = _health({r["endpoint"] for r in records.values() if r is not None})
        for r in records.values():
            if r is not None:
                r["health"] = health.get(r["endpoint"])

    @app.get("/account", response_class=HTMLResponse, responses=_PAGE)
    def account_page(
        request: Request, address: Annotated[str, QueryParam(max_length=64)] = ""
    ) -> HTMLResponse:
        from eth_utils.address import is_hex_address, to_checksum_address

        if not address:
            return render("account.html", request, address=None, a={})
        if not is_hex_address(address):
            raise HTTPException(422, "address must be a 20-byte hex account address")
        checksummed = to_checksum_address(address)
        found = _activity(checksummed)
        found.update(_storage(checksummed))
        return render(
            "account.html",
            request,
            address=checksummed,
            a=found,
            grant_expires=int(time.time()) + GRANT_DAYS * 86_400,
        )

    @app.get(
        "/network",
        response_class=HTMLResponse,
        responses={503: _page_refusal("This web node has no chain (--rpc, --deployment).")},
    )
    def network_page(request: Request) -> HTMLResponse:
        """Node health: every part this web node knows, checked as `datagora status` does."""
        ledger = config.ledger
        if ledger is None or config.rpc is None:
            raise HTTPException(503, "this web node has no chain (--rpc, --deployment)")
        from datagora.node.network import Network
        from datagora.node.status import check_network

        net = Network(
            chain_url=config.rpc,
            deployment=ledger.deployment,
            storage=config.storage,
            proxies=config.proxies,
            threshold=config.threshold,
            compute=config.compute,
            catalog=config.catalog,
        )
        parts = check_network(net)
        return render("network.html", request, parts=parts, threshold=config.threshold)

    @app.get("/api/config", responses={503: why("This web node has no chain.")})
    def api_config() -> dict[str, Any]:
        ledger = config.ledger
        if ledger is None:
            raise HTTPException(503, "this web node has no chain")
        from datagora.sharing import wire
        from datagora.sharing.requests import FragmentRequest

        # The page signs the fragment request the proxies of this build parse: its fields
        # and, where sharing binds requests to the deployment, the verifying contract.
        bound = hasattr(wire, "Domain")
        return {
            "chainId": ledger.chain.chain_id,
            "fragmentRequest": {
                "fields": FragmentRequest.eip712_type(),
                "verifyingContract": ledger.access.address if bound else None,
            },
            # Compute requests name the deployment's ComputeRegistry in their domain.
            "computeRequest": {"verifyingContract": ledger.compute.address},
            "contracts": ledger.deployment.contracts,
            "proxies": config.proxies,
            "threshold": config.threshold,
            "storage": config.storage,
            "compute": bool(config.compute),
        }

    @app.get(
        "/api/orders/latest",
        responses={
            **_API,
            404: why("No such order yet."),
            503: why("This web node has no chain."),
        },
    )
    def latest_order(
        dataset: Annotated[int, QueryParam(ge=0, le=2**256 - 1)],
        account: Annotated[str, QueryParam(max_length=64)],
        service: Annotated[int, QueryParam(ge=0, le=2**32 - 1)] = 0,
    ) -> dict[str, Any]:
        """The transaction of `account`'s latest order of `service` on `dataset` (what a
        compute request names), read from the chain's events."""
        from eth_utils.address import is_hex_address, to_checksum_address

        ledger = config.ledger
        if ledger is None:
            raise HTTPException(503, "this web node has no chain")
        if not is_hex_address(account):
            raise HTTPException(422, "account must be a 20-byte hex address")
        account = to_checksum_address(account)
        try:
            token = ledger.datatoken(dataset)
            # Only this consumer's orders of this dataset, filtered by the node through the
            # indexed topics: the answer does not grow with the chain.
            orders = token.find_events(
                "OrderStarted", dataset, account, start=ledger.deployment.start_block
            )
        except DatagoraError:
            orders = []  # no such dataset (or no datatoken): no order either
        found = None
        for e in orders:
            if int(e["service_id"]) == service:
                found = {"tx": e.tx_hash, "expires_at": int(e["expires_at"])}
        if found is None:
            raise HTTPException(404, f"no order of service {service} of dataset {dataset} yet")
        return found

    async def _forward(request: Request, method: str, path: str) -> Response:
        if not config.compute:
            raise HTTPException(503, "this web node knows no compute node")
        header = request.headers.get("x-datagora-request")
        body = await read_capped(request, MAX_FORWARD_BYTES)  # refused before read whole
        if body is None:
            raise HTTPException(413, f"the body is larger than {MAX_FORWARD_BYTES} bytes")
        headers = {"content-type": "application/json"}
        if header:
            headers["x-datagora-request"] = header
        try:
            r = await run_in_threadpool(
                client.request,
                method,
                f"{config.compute.rstrip('/')}{path}",
                content=body or None,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise _offline("compute node", exc) from None
        return Response(
            r.content,
            status_code=r.status_code,
            media_type=r.headers.get("content-type", "application/octet-stream"),
        )

    # The page's signed requests to the compute node go through here (same origin);
    # the node adds nothing and cannot change them: the compute node checks the signature.
    @app.get("/api/compute/owner/jobs/{job}/review", responses=_FORWARDED)
    async def fwd_review(job: JobId, request: Request) -> Response:
        return await _forward(request, "GET", f"/owner/jobs/{job}/review")

    @app.post("/api/compute/owner/jobs/{job}/approve", responses=_FORWARDED)
    async def fwd_approve(job: JobId, request: Request) -> Response:
        return await _forward(request, "POST", f"/owner/jobs/{job}/approve")

    @app.post("/api/compute/owner/jobs/{job}/deny", responses=_FORWARDED)
    async def fwd_deny(job: JobId, request: Request) -> Response:
        return await _forward(request, "POST", f"/owner/jobs/{job}/deny")

    @app.post("/api/compute/jobs", responses=_FORWARDED)
    async def fwd_submit(request: Request) -> Response:
        return await _forward(request, "POST", "/jobs")

    @app.get("/api/compute/jobs/{job}", responses=_FORWARDED)
    async def fwd_status(job: JobId, request: Request) -> Response:
        return await _forward(request, "GET", f"/jobs/{job}")

    @app.get("/api/compute/jobs/{job}/result", responses=_FORWARDED)
    async def fwd_result(job: JobId, request: Request) -> Response:
        return await _forward(request, "GET", f"/jobs/{job}/result")

    async def _relay(kind: str, index: int, method: str, path: str, request: Request) -> Response:
        nodes = config.proxies if kind == "proxy" else config.storage
        if not 0 <= index < len(nodes):
            raise HTTPException(404, f"this network has no {kind} {index}")
        body = await read_capped(request, MAX_FORWARD_BYTES)  # refused before read whole
        if body is None:
            raise HTTPException(413, f"the body is larger than {MAX_FORWARD_BYTES} bytes")
        try:
            r = await run_in_threadpool(
                client.request,
                method,
                f"{nodes[index].rstrip('/')}{path}",
                content=body or None,
                params=dict(request.query_params),
                headers={"content-type": "application/json"} if body else None,
            )
        except httpx.HTTPError as exc:
            raise _offline(f"{kind} {index}", exc) from None
        return Response(
            r.content,
            status_code=r.status_code,
            media_type=r.headers.get("content-type", "application/octet-stream"),
        )

    # The page's in-page download reaches the proxies and storage nodes through here (same
    # origin: those nodes send no CORS headers). What passes is what the network would
    # see anyway: signed fragment requests, capsule fragments re-encrypted to the
    # visitor's key, ciphertext shares, manifests. The page verifies every fragment and
    # share; the data key and the plaintext exist only in the page.
    @app.post("/api/relay/proxy/{index}/reencrypt", responses=_RELAYED)
    async def relay_reencrypt(index: NodeIndex, request: Request) -> Response:
        return await _relay("proxy", index, "POST", "/reencrypt", request)

    @app.get("/api/relay/storage/{index}/shares/{name}", responses=_RELAYED)
    async def relay_share(index: NodeIndex, name: str, request: Request) -> Response:
        if not _HEX64.fullmatch(name):
            raise HTTPException(422, "a share name is 64 lowercase hex digits")
        return await _relay("storage", index, "GET", f"/shares/{name}", request)

    @app.get("/api/relay/storage/{index}/placements", responses=_RELAYED)
    async def relay_placements(index: NodeIndex, request: Request) -> Response:
        return await _relay("storage", index, "GET", "/placements", request)

    return app
