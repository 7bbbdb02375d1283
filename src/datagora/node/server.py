"""`datagora node`: one process serving the roles it is given, over HTTP.

With one role the role's API is served at the root; with several, each is
mounted under ``/<role>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from datagora.errors import ConfigError
from datagora.node.apps import agent_app, catalog_app, compute_app, proxy_app, storage_app

if TYPE_CHECKING:
    # Imported where used: a storage node needs neither (web3 and eth-account take
    # over a second to import, paid by every node process at start).
    from datagora.crypto.keys import Identity
    from datagora.ledger import Ledger

ROLES = ("storage", "catalog", "proxy", "agent", "compute", "web")
WEB_APP = "datagora.web.app"
"""The web role's module. The web sits above the node layer (it reads the catalog, the
chain and the audit trail, and is optional in a node build), so the node loads it by
name where the role is asked for, never by an import."""

DEFAULT_MAX_SHARE_BYTES = 64 << 20
PRIVATE_METADATA_ENV = "DATAGORA_CATALOG_PRIVATE_METADATA"
"""Set to 1, a catalog node fetches metadata URIs on private and loopback hosts too."""


@dataclass
class NodeConfig:
    """Everything a node's roles may need; each role reads its own part."""

    data_dir: Path
    max_share_bytes: int = DEFAULT_MAX_SHARE_BYTES
    rpc: str | None = None
    deployment: Path | None = None
    database: str | None = None
    storage_nodes: list[str] = field(default_factory=list)
    confirmations: int = 0
    # catalog: fetch metadata URIs on private/loopback hosts (a development network);
    # also set by DATAGORA_CATALOG_PRIVATE_METADATA=1 in the environment
    allow_private_metadata: bool = False
    poll_interval: float = 0.1
    # proxy, agent: the account the node acts as; its keystore password is read
    # from the environment variable `password_env`, never from a file or argument.
    keys_dir: Path | None = None
    account: str | None = None
    password_env: str = "DATAGORA_PASSWORD"
    anchor_every: float = 60.0
    proxies: list[str] = field(default_factory=list)
    # agent: 0 = the default (2 with more than one proxy, else 1)
    threshold: int = 0
    # agent: the owner's delegation keys sealed to `account` (an authorised agent key);
    # without it the agent acts as `account` itself, which must then be the owner
    delegation: Path | None = None
    # compute: dataset id -> the plaintext file the owner's node computes on
    compute_datasets: dict[int, Path] = field(default_factory=dict)
    allow_weak_sandbox: bool = False
    # compute: each consumer's epsilon budget on a stored dataset that requires DP
    epsilon_budget: float = 3.0
    # compute: open jobs (pending, queued, running) per dataset and per consumer
    # (None: the compute node's defaults)
    max_jobs_per_dataset: int | None = None
    max_jobs_per_consumer: int | None = None
    # web: the catalog the pages read and the compute node the page's signed requests go to
    catalog: str | None = None
    compute: str | None = None
    # storage: keep only what the ledger records, deleting the rest after the grace
    require_onchain_record: bool = False
    retention_grace: float = 3600.0
    # storage: the URLs signed writes must name (default: the URL of each request),
    # and the chain id writes are signed for when the node reads no ledger
    public_urls: list[str] = field(default_factory=list)
    chain_id: int | None = None
    # storage with a ledger and an account: prove this node's deals each period, and
    # join the deals naming it that match what it holds (posting collateral)
    accept_deals: bool = False
    prove_every: float = 12.0

    def ledger(self) -> Ledger:
        from datagora.ledger import Ledger

        if self.rpc is None or self.deployment is None:
            raise ConfigError("this role needs --rpc and --deployment")
        return Ledger.connect(self.rpc, self.deployment)

    def registered(self, role: str) -> list[str]:
        """The endpoints of the active nodes with `role` in the NodeRegistry, read once
        at start: what a node uses when no ``--storage-node``/``--proxy`` is given."""
        from datagora.ledger import Role

        return self.ledger().registry.endpoints(Role.parse(role))

    def identity(self) -> Identity:
        from datagora.crypto.keys import load_account

        if self.account is None:
            raise ConfigError("this role acts as an account: pass --account (and --keys)")
        password = os.environ.get(self.password_env)
        if not password:
            raise ConfigError(f"set {self.password_env} to the keystore password of {self.account}")
        return load_account(self.keys_dir, self.account, password)


_IDENTITIES: dict[str, str] = {}
_PROVERS: dict[Path, object] = {}


def _start_prover(config: NodeConfig, ledger: Ledger) -> None:
    """Prove the deals naming this storage node's account in a thread (once per data
    directory), joining new ones with ``--accept-deals``."""
    from datagora.storage.deals import DealWatcher

    data_dir = config.data_dir / "storage"
    if data_dir in _PROVERS or ledger.deals is None:
        return
    _PROVERS[data_dir] = DealWatcher(
        ledger.deals,
        config.identity().account,
        data_dir,
        lambda dataset: ledger.data_nft.get_dataset(dataset).manifest_hash,
        accept=config.accept_deals,
        every=config.prove_every,
    ).start()


def _node_accounts(config: NodeConfig, ledger: Ledger) -> list[str]:
    """The accounts a storage node acts as in deals: its ``--account``, else the
    registered storage nodes whose endpoint is one of its ``--public-url``s."""
    if config.account is not None:
        if config.account not in _IDENTITIES:  # a keystore is slow to open: once
            _IDENTITIES[config.account] = config.identity().address
        return [_IDENTITIES[config.account]]
    from datagora.ledger import Role

    urls = {u.rstrip("/") for u in config.public_urls}
    return [
        n.address for n in ledger.registry.nodes(Role.STORAGE) if n.endpoint.rstrip("/") in urls
    ]


def _role_app(role: str, config: NodeConfig) -> FastAPI:
    if role == "storage":
        retention = None
        # With a chain, placement records are checked against the datasets' controllers.
        ledger = config.ledger() if config.rpc is not None and config.deployment else None
        if config.require_onchain_record:
            from datagora.storage.retention import OnChainReferences, Retention

            retention = Retention(OnChainReferences.of(config.ledger()), config.retention_grace)
        sources = []
        if ledger is not None and ledger.deals is not None:
            # An owner with an open deal naming this node may store its dataset here.
            from datagora.storage.deals import DealQuotas

            sources.append(DealQuotas(ledger.deals, lambda: _node_accounts(config, ledger)))
            if config.account is not None:
                _start_prover(config, ledger)
        return storage_app(
            config.data_dir / "storage",
            config.max_share_bytes,
            retention=retention,
            ledger=ledger,
            quota_sources=sources,
            chain_id=config.chain_id,
            public_urls=config.public_urls,
            known_nodes=config.storage_nodes,
        )
    if role == "proxy":
        return proxy_app(
            config.ledger(), config.identity(), config.data_dir / "proxy", config.anchor_every
        )
    if role == "compute":
        token = os.environ.get("DATAGORA_OWNER_TOKEN") or None
        # With storage nodes, the node serves every dataset its operator published,
        # fetched and decrypted per job; --dataset ID=PATH files are served as well.
        return compute_app(
            config.ledger(),
            config.identity(),
            config.data_dir / "compute",
            storage=config.storage_nodes or config.registered("storage"),
            datasets=config.compute_datasets,
            epsilon_budget=config.epsilon_budget,
            allow_weak_sandbox=config.allow_weak_sandbox,
            owner_token=token,
            max_jobs_per_dataset=config.max_jobs_per_dataset,
            max_jobs_per_consumer=config.max_jobs_per_consumer,
        )
    if role == "web":
        return _web_app(config)
    if role == "agent":
        from datagora.sharing.requests import check_threshold
        from datagora.sharing.serve import default_threshold, load_delegation_keys

        proxies = config.proxies or config.registered("proxy")
        if not proxies:
            raise ConfigError(
                "the agent role needs proxies: pass --proxy URL, or register some "
                "(`datagora node register --roles proxy`)"
            )
        threshold = config.threshold or default_threshold(len(proxies))
        check_threshold(threshold, len(proxies), ConfigError)
        identity = config.identity()
        keys = load_delegation_keys(config.delegation, identity) if config.delegation else None
        return agent_app(
            config.ledger(),
            identity,
            proxies,
            threshold,
            config.data_dir / "agent",
            config.poll_interval,
            keys=keys,
        )
    return catalog_app(
        config.ledger(),
        config.data_dir,
        config.storage_nodes or config.registered("storage"),
        config.poll_interval,
        database=config.database,
        confirmations=config.confirmations,
        allow_private_metadata=config.allow_private_metadata
        or os.environ.get(PRIVATE_METADATA_ENV) == "1",
    )


def _web_app(config: NodeConfig) -> FastAPI:
    import importlib

    if not config.catalog:
        raise ConfigError("the web role needs --catalog (the catalog node's URL)")
    try:
        web = importlib.import_module(WEB_APP)
    except ImportError as exc:
        raise ConfigError(f"this node build has no web role ({exc})") from None
    settings = web.WebConfig(
        catalog=config.catalog,
        rpc=config.rpc,
        deployment=config.deployment,
        proxies=config.proxies,
        threshold=config.threshold,
        storage=config.storage_nodes,
        compute=config.compute,
    )
    app: FastAPI = web.create_web_app(settings)
    return app


def build_app(roles: list[str], config: NodeConfig) -> FastAPI:
    """The app for `roles`; unknown roles are a :class:`ConfigError` naming the known ones."""
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ConfigError(
            f"unknown role(s) {', '.join(unknown) or '(none given)'}: this node serves "
            f"{', '.join(ROLES)}"
        )
    if len(roles) == 1:
        return _role_app(roles[0], config)
    app = FastAPI(title=f"datagora node ({', '.join(roles)})")
    for role in dict.fromkeys(roles):
        app.mount(f"/{role}", _role_app(role, config))
    return app


def serve(roles: list[str], host: str, port: int, config: NodeConfig, workers: int = 1) -> None:
    """Run the node in the foreground until interrupted; a proxy may run ``workers``
    processes on its port (see :mod:`datagora.sharing.serve`)."""
    import uvicorn

    if workers != 1:
        if roles != ["proxy"] or not 1 <= workers <= 64:
            raise ConfigError("--workers (1 to 64) is for a node serving the proxy role alone")
        from datagora.crypto.keys import default_keys_dir
        from datagora.sharing.serve import main as serve_proxy

        if config.rpc is None or config.deployment is None or config.account is None:
            raise ConfigError("the proxy role needs --rpc, --deployment and --account")
        config.identity()  # the keystore opens: a wrong password fails here, once
        argv = [
            "--role", "proxy", "--host", host, "--port", str(port),
            "--data", str(config.data_dir / "proxy"), "--rpc", config.rpc,
            "--deployment", str(config.deployment),
            "--keys", str(config.keys_dir or default_keys_dir()), "--account", config.account,
            "--password-env", config.password_env, "--anchor-every", str(config.anchor_every),
            "--workers", str(workers),
        ]  # fmt: skip
        if serve_proxy(argv):
            raise SystemExit(2)
        return

    from datagora.sharing.proxy import outermost

    app = build_app(roles, config)
    uvicorn.run(outermost(app), host=host, port=port, log_level="warning", access_log=False)
