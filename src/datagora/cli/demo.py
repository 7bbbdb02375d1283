"""The demo story, in one process: the embedded chain, and eight storage nodes, three
proxies, three hospitals' compute nodes and a catalog served in threads on loopback.

1. Three hospitals publish shares of the Wisconsin breast cancer data (scikit-learn's
   bundled copy) with metadata, mock data and a price; a fourth dataset is free but
   needs the owner's approval.
2. A researcher searches the catalog, buys and orders in one transaction, gets the
   key through 2-of-3 proxy re-encryption, downloads, and checks byte for byte.
3. A second researcher requests the approval-only dataset; granted, downloaded,
   revoked; the next download is refused.
4. A third researcher trains a model federated over the three hospitals' compute
   nodes (compute-to-data; every job on chain) and compares it to central training.
5. Two storage nodes stop; the data still comes back; repair restores redundancy.
6. An auditor prints and verifies one dataset's timeline and exports W3C PROV.

The network runs under a temporary directory, removed at the end with every server
stopped, also when a step fails; what the story hands the user (the PROV-JSON export)
is written to an output directory it names, and kept.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx
import pandas as pd
from rich.console import Console
from rich.padding import Padding
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn
from rich.table import Table
from rich.text import Text
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from datagora.audit import render_timeline, timeline, to_prov, verify, write_prov
from datagora.catalog.db import Database
from datagora.catalog.indexer import Indexer
from datagora.catalog.resolver import MetadataResolver, datagora_uri
from datagora.catalog.search import SearchQuery, search
from datagora.compute.client import ComputeClient
from datagora.compute.federated import FEDAVG_ALGORITHM, Site, federated_train
from datagora.compute.jobs import ComputeDataset, algorithm_hash
from datagora.compute.mock import make_mock
from datagora.compute.sandbox import probe_isolation
from datagora.crypto.keys import Identity
from datagora.display import format_amount, format_bool, format_list, short_hex
from datagora.ledger import JobStatus, Ledger, Pricing, dev_account
from datagora.market.flows import Endpoints, Marketplace, PublishedDataset
from datagora.node.apps import compute_app, proxy_app, storage_app
from datagora.node.connect import dev_identity
from datagora.node.inprocess import ServerGroup, ThreadServer
from datagora.node.network import PROXIES, THRESHOLD, dev_grants
from datagora.sharing.agent import delegate
from datagora.sharing.errors import AccessRefused
from datagora.storage.client import StorageClient
from datagora.storage.repair import Repairer

HOSPITALS: Final = ("St. Mary's Hospital", "Karolinska University Hospital", "Charité Berlin")
STORAGE_NODES: Final = 8  # n = 6 shares per chunk, so two lost nodes leave spares to repair onto
K, N = 4, 6
CHUNK_SIZE: Final = 16 << 10  # small, so that each ~30 KB file still makes several chunks
TOKEN: Final = 10**18
TARGET: Final = "target"


@dataclass
class _Say:
    """Narration on a Rich console, or nothing (``--json``)."""

    console: Console | None

    def __call__(self, text: str = "") -> None:
        """One line of the story; an indented one wraps under its own indent."""
        if self.console is None:
            return
        body = text.lstrip(" ")
        indent = len(text) - len(body)
        if indent:
            self.console.print(Padding(Text.from_markup(body), (0, 0, 0, indent), expand=False))
        else:
            self.console.print(text)

    def step(self, number: int, title: str) -> None:
        self(f"\n[bold cyan]{number}. {title}[/bold cyan]")

    def show(self, renderable: Any) -> None:
        if self.console is not None:
            self.console.print(renderable)

    @contextmanager
    def bar(
        self, description: str, total: int | None = None
    ) -> Iterator[Callable[[int, int], None]]:
        """A byte progress bar; yields a ``(done, total)`` callback."""
        if self.console is None:
            yield lambda done, total: None
            return
        progress = Progress(
            f"  {description}",
            BarColumn(),
            DownloadColumn(),
            console=self.console,
            transient=False,
        )
        with progress:
            task = progress.add_task(description, total=total)
            yield lambda done, total: progress.update(task, completed=done, total=total)

    @contextmanager
    def counter(self, description: str, total: int) -> Iterator[Callable[[], None]]:
        """A count progress bar; yields a callback that advances it by one."""
        if self.console is None:
            yield lambda: None
            return
        progress = Progress(
            f"  {description}", BarColumn(), TaskProgressColumn(), console=self.console
        )
        with progress:
            task = progress.add_task(description, total=total)
            yield lambda: progress.advance(task)


@dataclass
class _World:
    """What the story's steps share."""

    base: Path
    out: Path  # kept after the demo: what it tells the user it wrote
    ledger: Ledger
    storage: list[ThreadServer]
    proxies: list[str]
    servers: ServerGroup
    say: _Say
    hospitals: list[Identity]
    train: pd.DataFrame
    test: pd.DataFrame
    files: dict[int, Path] = field(default_factory=dict)  # dataset -> the owner's plaintext
    published: list[PublishedDataset] = field(default_factory=list)
    owners: dict[int, Identity] = field(default_factory=dict)

    @property
    def storage_urls(self) -> list[str]:
        return [s.url for s in self.storage]

    @property
    def live_storage(self) -> list[str]:
        return [s.url for s in self.storage if s.running]

    def market(self, who: Identity) -> Marketplace:
        return Marketplace(self.ledger, Endpoints(self.storage_urls, self.proxies, THRESHOLD), who)


def _breast_cancer() -> pd.DataFrame:
    frame: pd.DataFrame = load_breast_cancer(as_frame=True).frame
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


def _csv(frame: pd.DataFrame) -> bytes:
    text: str = frame.to_csv(index=False)
    return text.encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch_blob(nodes: list[str], sha256: str) -> bytes | None:
    """A public content-addressed blob from any storage node, if its hash checks."""
    for node in nodes:
        try:
            response = httpx.get(f"{node}/shares/{sha256}", timeout=10)
        except httpx.HTTPError:
            continue
        if response.status_code == 200 and _sha256(response.content) == sha256:
            return response.content
    return None


# -- 1. publish ---------------------------------------------------------------------------


def _metadata(
    world: _World,
    title: str,
    creator: str,
    frame: pd.DataFrame,
    price: int,
    *,
    compute: bool,
    writer: Identity,
    approval: bool = False,
) -> dict[str, Any]:
    mock = _csv(make_mock(frame, seed=len(world.published)))
    mock_hash = StorageClient(world.live_storage, signer=writer.account).put_blob(mock, "mock data")
    services: list[dict[str, Any]] = [
        {
            "id": 0,
            "type": "download",
            "price": str(price),
            "policy": "approval" if approval else "automatic",
        }
    ]
    if compute:
        services.append(
            {
                "id": 1,
                "type": "compute",
                "price": str(price),
                "trusted_algorithms": [algorithm_hash(FEDAVG_ALGORITHM.encode()).hex()],
            }
        )
    return {
        "title": title,
        "description": (
            f"{len(frame)} patients of the Wisconsin diagnostic breast cancer data "
            "(fine-needle aspirates; 30 cell-nucleus features; target 1 = benign)."
        ),
        "tags": ["medical", "oncology", "breast-cancer", "tabular"],
        "license": "CC-BY-4.0",
        "creator": creator,
        "columns": [
            {"name": str(c), "type": "int" if c == TARGET else "float"} for c in frame.columns
        ],
        "mock": {"uri": datagora_uri(mock_hash), "sha256": mock_hash.hex()},
        "services": services,
    }


def _publish(world: _World) -> dict[str, Any]:
    say, ledger = world.say, world.ledger
    say.step(1, "Three hospitals publish; a fourth dataset is free but needs approval")
    say(
        f"  each file is encrypted (AES-256-GCM), erasure-coded and spread over "
        f"{STORAGE_NODES} storage nodes; metadata and mock data are public blobs"
    )
    # Each hospital holds a third of the training rows; the rest is the evaluation cohort.
    shuffled = world.train.sample(frac=1.0, random_state=0)
    shares = [shuffled.iloc[i::3] for i in range(3)]
    cohorts = [
        (name, who, share, (i + 1) * TOKEN, True)
        for i, (name, who, share) in enumerate(zip(HOSPITALS, world.hospitals, shares, strict=True))
    ]
    cohorts.append((HOSPITALS[0], world.hospitals[0], world.test, 0, False))
    for name, who, frame, price, compute in cohorts:
        approval = not compute
        title = (
            f"Breast cancer evaluation cohort — {name} (approval only)"
            if approval
            else f"Breast cancer cohort — {name}"
        )
        data = _csv(frame)
        path = world.base / f"owner-{who.address[2:10]}" / f"cohort-{len(world.published)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        meta = _metadata(
            world, title, name, frame, price, compute=compute, writer=who, approval=approval
        )
        with say.bar(f"{name[:22]:<22} upload", len(data)) as progress:
            pub = world.market(who).publish(
                path,
                meta,
                pricing=Pricing.NONE if approval else Pricing.FIXED,
                price=price,
                market_fee_bps=100,
                market_fee_recipient=dev_account(0).address,
                chunk_size=CHUNK_SIZE,
                k=K,
                n=N,
                progress=progress,
            )
        if compute:
            ledger.datatoken(pub.dataset).set_service(who.account, 1, 86_400)
            ledger.compute.set_trusted(
                who.account, pub.dataset, algorithm_hash(FEDAVG_ALGORITHM.encode()), True
            )
        world.published.append(pub)
        world.files[pub.dataset] = path
        world.owners[pub.dataset] = who
        kind = "free, approval needed" if approval else format_amount(price)
        say(
            f"  dataset #{pub.dataset}: {len(frame)} patients, {kind}; "
            f"{len(pub.upload.manifest.chunks)} chunks × {N} shares (any {K} rebuild); "
            f"1 transaction, {pub.tx.gas_used:,} gas"
        )
    return {
        "published": len(world.published),
        "publish_gas": world.published[0].tx.gas_used,
    }


# -- 2. search, buy and order, download ---------------------------------------------------


def _buy_and_download(world: _World) -> dict[str, Any]:
    say, ledger = world.say, world.ledger
    say.step(2, "A researcher searches, buys and orders in one transaction, downloads")
    database = Database(f"sqlite:///{world.base / 'catalog.sqlite'}")
    # The demo's storage nodes are on loopback, which a catalog refuses by default.
    resolver = MetadataResolver(world.storage_urls, allow_private=True)
    try:
        indexer = Indexer(ledger, database, resolver)
        indexer.sync()  # the chain's events; metadata is fetched outside that transaction
        indexer.retry_pending()
        hits = search(database, SearchQuery(q="breast cancer", service="compute", sort="oldest"))
    finally:
        resolver.close()
        database.engine.dispose()
    table = Table("dataset", "title", "price", "services", "mock", title="catalog: breast cancer")
    for item in hits.items:
        table.add_row(
            f"#{item.id}",
            item.title,
            format_amount(int(item.price)),
            format_list(item.services),
            format_bool(item.has_mock),
        )
    say.show(table)
    target = world.published[0]
    researcher = dev_identity(4)
    ledger.market_token.mint(dev_account(0), researcher.address, 100 * TOKEN)
    market = world.market(researcher)
    # Before paying, the researcher looks at the public mock data (same schema, no real row).
    meta = market.metadata(target.dataset)
    mock = _fetch_blob(world.live_storage, meta.mock.sha256) if meta.mock is not None else None
    if mock is not None:
        preview = pd.read_csv(io.BytesIO(mock))
        say(
            f"  mock data of #{target.dataset}: {len(preview)} synthetic rows, "
            f"{len(preview.columns)} columns, sha256 checked against the metadata"
        )
    order = market.buy_and_order(target.dataset)
    say(
        f"  researcher {short_hex(researcher.address)} buys and orders #{target.dataset}: "
        f"1 transaction (EIP-2612 permit), {order.tx.gas_used:,} gas"
    )
    owner = world.owners[target.dataset]
    delegation = delegate(
        ledger,
        owner,
        target.dataset,
        target.version,
        researcher.address,
        market.consumer_key(),
        world.proxies,
        THRESHOLD,
    )
    say(
        f"  the owner (as its agent does on seeing the order) gives "
        f"{len(delegation.accepted)} proxies a key fragment each; any {THRESHOLD} re-encrypt"
        " the key"
    )
    dst = world.base / "researcher1" / "cohort.csv"
    dst.parent.mkdir(parents=True, exist_ok=True)
    expected = world.files[target.dataset].read_bytes()
    with say.bar("download", len(expected)) as progress:
        market.download(target.dataset, dst, progress)
    match = _sha256(dst.read_bytes()) == _sha256(expected)
    verdict = "[green]identical to the hospital's file[/green]" if match else "[red]DIFFERS[/red]"
    say(f"  sha256 {short_hex(_sha256(expected))}: {verdict}")
    return {
        "search_hits": hits.total,
        "mock_verified": mock is not None,
        "buy_and_order_gas": order.tx.gas_used,
        "download_sha256_match": match,
    }


# -- 3. request, grant, revoke -----------------------------------------------------------


def _request_grant_revoke(world: _World) -> dict[str, Any]:
    say = world.say
    say.step(3, "A second researcher requests the approval-only dataset; granted, then revoked")
    target = world.published[3]
    owner = world.market(world.owners[target.dataset])
    researcher = world.market(dev_identity(5))
    request_id = researcher.request_access(target.dataset, "validate a tumour classifier")
    say(f"  request #{request_id} filed on chain: 'validate a tumour classifier'")
    owner.grant(request_id)
    say("  the owner grants it (30 days) and hands the proxies key fragments")
    expected = world.files[target.dataset].read_bytes()
    got = researcher.read_bytes(target.dataset)
    granted_match = _sha256(got) == _sha256(expected)
    say(
        f"  download while granted: {len(got):,} bytes, "
        f"sha256 matches: {format_bool(granted_match)}"
    )
    owner.revoke(request_id)
    refused = False
    try:
        researcher.download(target.dataset, world.base / "researcher2-after-revoke.csv")
    except AccessRefused as exc:
        refused = True
        say(f"  revoked; the next download is refused: [yellow]{exc}[/yellow]")
    if not refused:
        say("  [red]revoked, but the download was not refused[/red]")
    say("  (what was downloaded before the revocation cannot be recalled)")
    return {"granted_download_sha256_match": granted_match, "revoked_download_refused": refused}


# -- 4. federated compute-to-data ---------------------------------------------------------


def _federated(world: _World) -> dict[str, Any]:
    say, ledger = world.say, world.ledger
    say.step(4, "A third researcher trains across the three hospitals (compute-to-data)")
    weak = probe_isolation() is None
    if weak:
        say(
            "  [yellow]this machine cannot make namespaces: the compute nodes run jobs in the "
            "weak sandbox (no network isolation)[/yellow]"
        )
    researcher = dev_identity(6)
    ledger.market_token.mint(dev_account(0), researcher.address, 100 * TOKEN)
    market = world.market(researcher)
    rounds = 3
    jobs = (1 + rounds) * 3
    sites: list[Site] = []
    clients: list[_CountingClient] = []
    try:
        for k, pub in enumerate(world.published[:3]):
            owner = world.owners[pub.dataset]
            order = market.buy_and_order(pub.dataset, service_id=1)
            spec = ComputeDataset(world.files[pub.dataset], version=pub.version, service_id=1)
            factory = partial(
                compute_app,
                ledger,
                owner,
                world.base / f"compute{k}",
                datasets={pub.dataset: spec},
                allow_weak_sandbox=weak,
                # The node's worker threads send transactions on the shared embedded chain.
                chain_lock=getattr(ledger.chain, "lock", None),
            )
            node = world.servers.start(factory, f"compute-{k}")
            client = _CountingClient(
                node.url, researcher, ledger.chain.chain_id, ledger.compute.address
            )
            clients.append(client)
            sites.append(Site(client, pub.dataset, order.tx.tx_hash))
        say(
            f"  ordered the compute service of "
            f"{', '.join(f'#{p.dataset}' for p in world.published[:3])}; each hospital's "
            "node runs the trusted FedAvg algorithm next to its data"
        )
        features = [c for c in world.train.columns if c != TARGET]
        with say.counter(f"jobs (statistics + {rounds} FedAvg rounds)", jobs) as advance:
            for client in clients:
                client.on_done = advance
            model = federated_train(sites, features, TARGET, rounds=rounds)
    finally:
        for client in clients:
            client.close()
    x_test = world.test[features].to_numpy()
    federated = model.score(x_test, world.test[TARGET].to_numpy())
    scaler = StandardScaler().fit(world.train[features])
    central_model = LogisticRegression(max_iter=5000).fit(
        scaler.transform(world.train[features]), world.train[TARGET]
    )
    central = float(central_model.score(scaler.transform(world.test[features]), world.test[TARGET]))
    recorded = [ledger.compute.job(job) for job in model.jobs]
    on_chain = all(r.status == JobStatus.SUCCEEDED and r.result != bytes(32) for r in recorded)
    say(
        f"  {len(model.jobs)} jobs, on chain with algorithm and result hashes "
        f"({'all succeeded' if on_chain else '[red]NOT all succeeded[/red]'}); "
        "only weights and aggregates left"
    )
    say(
        f"  accuracy on the {len(world.test)} patients of #{world.published[3].dataset}: federated "
        f"[bold]{federated:.3f}[/bold], central (pooled rows) {central:.3f}"
    )
    return {
        "federated_accuracy": round(federated, 4),
        "central_accuracy": round(central, 4),
        "compute_jobs": len(model.jobs),
        "compute_jobs_on_chain": on_chain,
        "sandbox": "weak" if weak else "namespaces",
    }


class _CountingClient(ComputeClient):
    """A compute client that reports each finished job (for a progress bar)."""

    on_done: Callable[[], None] = staticmethod(lambda: None)

    def wait(
        self, job: int, timeout: float = 120.0, until: tuple[str, ...] | None = None
    ) -> dict[str, Any]:
        info = super().wait(job, timeout) if until is None else super().wait(job, timeout, until)
        self.on_done()
        return info


# -- 5. node loss and repair --------------------------------------------------------------


def _node_loss(world: _World) -> dict[str, Any]:
    say = world.say
    say.step(5, "Two storage nodes stop; the data comes back; repair restores redundancy")
    lost = world.storage[:2]
    for node in lost:
        node.stop()
    say(f"  stopped {', '.join(n.url for n in lost)}")
    target = world.published[0]
    researcher = world.market(dev_identity(4))  # its order from step 2 is still valid
    expected = world.files[target.dataset].read_bytes()
    got = researcher.read_bytes(target.dataset)
    survived = _sha256(got) == _sha256(expected)
    say(
        f"  the researcher downloads #{target.dataset} again: "
        f"sha256 matches: {format_bool(survived)}"
    )
    rebuilt = degraded = 0
    with say.counter("repair", len(world.published)) as advance:
        for pub in world.published:
            # Each dataset's controller repairs it: the nodes take a new placement
            # record, and the chain a repair record, only from the controller.
            owner = world.owners[pub.dataset]
            # All the nodes: repair finds out which are down.
            repairer = Repairer(world.storage_urls, signer=owner.account)
            degraded += not repairer.check(pub.manifest_hash).healthy
            report = repairer.repair(pub.manifest_hash)
            rebuilt += report.rebuilt
            if report.rebuilt and report.placement_hash is not None:
                # On the record, so it shows in the audit.
                world.ledger.storage_log.record_repair(
                    owner.account,
                    pub.dataset,
                    pub.manifest_hash,
                    report.placement_hash,
                    report.rebuilt,
                )
            advance()
    after = [Repairer(world.live_storage).check(p.manifest_hash) for p in world.published]
    repaired = rebuilt > 0 and all(r.healthy for r in after)
    say(
        f"  {degraded} of {len(world.published)} datasets had lost shares; repair rebuilt "
        f"{rebuilt} from other shares, without the key"
    )
    say(f"  every chunk has {N} verified shares on distinct live nodes again: {repaired}")
    return {"survived_node_loss": survived, "repaired": repaired, "repaired_shares": rebuilt}


# -- 6. audit -----------------------------------------------------------------------------


def _audit(world: _World) -> dict[str, Any]:
    say, ledger = world.say, world.ledger
    target = world.published[0]
    say.step(6, f"An auditor replays and verifies dataset #{target.dataset}, exports PROV")
    entries = timeline(ledger, target.dataset)
    say.show(render_timeline(entries, title=f"dataset #{target.dataset}: its history on chain"))
    report = verify(ledger, target.dataset, world.live_storage, [], sample=16, seed=0)
    say(
        f"  {len(report.checks)} hash checks (metadata, manifest, Merkle root, sampled "
        f"shares): {len(report.mismatches)} mismatched, {len(report.unavailable)} unavailable"
    )
    prov = world.out / f"dataset-{target.dataset}.prov.json"
    write_prov(to_prov(ledger, target.dataset, entries), prov)
    say(f"  W3C PROV-JSON written: {prov} ({prov.stat().st_size:,} bytes)")
    events = sum(1 for _ in ledger.events())
    return {
        "audit_verified": report.complete,
        "timeline_entries": len(entries),
        "prov_bytes": prov.stat().st_size,
        "prov_file": str(prov),
        "events": events,
    }


# -- the whole story ----------------------------------------------------------------------


def _start_network(
    base: Path, servers: ServerGroup, ledger: Ledger
) -> tuple[list[ThreadServer], list[str]]:
    storage = []
    for i in range(STORAGE_NODES):
        app = partial(
            storage_app, base / f"storage{i}", 16 << 20, ledger=ledger, grants=dev_grants()
        )
        storage.append(servers.start(app, f"storage-{i}"))
    proxies = []
    for i in range(PROXIES):
        app = partial(proxy_app, ledger, dev_identity(7 + i), base / f"proxy{i}")
        proxies.append(servers.start(app, f"proxy-{i}").url)
    return storage, proxies


DEFAULT_OUT: Final = Path("datagora-demo-out")
"""Where the demo writes what it hands the user, unless told otherwise."""


def run_demo(console: Console | None, out: Path = DEFAULT_OUT) -> dict[str, Any]:
    """Run the story; narrate on `console` if given; keep its outputs in `out` (made if
    missing); return the figures."""
    out = out.absolute()
    out.mkdir(parents=True, exist_ok=True)
    say = _Say(console)
    started = time.perf_counter()
    say("[bold]datagora demo[/bold] — one process: an embedded EVM and every role on loopback")
    result: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="datagora-demo-") as tmp,
        ServerGroup() as servers,
    ):
        base = Path(tmp)
        ledger = Ledger.embedded()
        storage, proxies = _start_network(base, servers, ledger)
        say(
            f"  chain {ledger.chain.chain_id} with {len(ledger.deployment.contracts)} contracts; "
            f"{STORAGE_NODES} storage nodes, {PROXIES} proxies ({THRESHOLD}-of-{PROXIES})"
        )

        frame = _breast_cancer()
        train, test = train_test_split(
            frame, test_size=0.25, random_state=0, stratify=frame[TARGET]
        )
        world = _World(
            base, out, ledger, storage, proxies, servers, say, [dev_identity(i) for i in (1, 2, 3)],
            train, test,
        )  # fmt: skip
        for step in (
            _publish,
            _buy_and_download,
            _request_grant_revoke,
            _federated,
            _node_loss,
            _audit,
        ):
            result.update(step(world))
    result["seconds"] = round(time.perf_counter() - started, 2)
    say(
        f"\ndone in {result['seconds']:.1f} s; every node stopped and the network's temporary "
        f"files removed; the outputs are kept in {out}"
    )
    return result
