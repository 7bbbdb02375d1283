"""Helpers for the compute tests: datasets with a compute service, nodes on loopback."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import uvicorn
from sklearn.datasets import load_breast_cancer

from datagora.compute import ComputeClient, create_compute_app
from datagora.compute.jobs import JobService
from datagora.crypto.keys import Identity
from datagora.ledger import Ledger, Pricing
from datagora.ports import free_port
from helpers import publish

SERVICE = 1


def identity(account: Any) -> Identity:
    return Identity.from_private_key(bytes(account.key))


def breast_cancer() -> pd.DataFrame:
    """scikit-learn's bundled Wisconsin breast cancer table (569 rows, 30 features + target)."""
    frame: pd.DataFrame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame


def documented_bounds(margin: float = 1.5) -> dict[str, list[float]]:
    """DP bounds from domain knowledge, not from any rows a test treats as private:
    ``[0, margin × max]`` per feature, the max read from the summary-statistics table
    that scikit-learn documents for the dataset (``load_breast_cancer().DESCR``)."""
    text = load_breast_cancer().DESCR
    kinds = {"mean": "mean_{}", "standard error": "{}_error", "worst": "worst_{}"}
    bounds = {}
    pattern = r"^(\w[\w ]*?) \((mean|standard error|worst)\):\s+([\d.]+)\s+([\d.]+)\s*$"
    for m in re.finditer(pattern, text, re.M):
        name, kind, _, high = m.groups()
        column = kinds[kind].format(name).replace(" ", "_")
        bounds[column] = [0.0, margin * float(high)]
    return bounds


def compute_dataset(
    ledger: Ledger, owner: Any, consumer: Identity, tokens: int = 5
) -> tuple[int, str]:
    """Publish a dataset with compute service 1; the consumer orders it (with its Umbral key)."""
    pub = publish(ledger, Pricing.NONE, owner=owner)
    token = ledger.datatoken(pub.dataset)
    token.set_service(owner, SERVICE, 3600)
    token.mint(owner, consumer.address, tokens)
    order = token.order(consumer.account, SERVICE, consumer.umbral_public_key)
    return pub.dataset, order.tx.tx_hash


class Node:
    """A compute node app served by uvicorn on a loopback port (in a thread)."""

    def __init__(self, **kwargs: Any) -> None:
        self.app = create_compute_app(**kwargs)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def jobs(self) -> JobService:
        service: JobService = self.app.state.jobs
        return service

    def start(self) -> Node:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("compute node did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def client(self, who: Identity, chain_id: int) -> ComputeClient:
        return ComputeClient(self.url, who, chain_id, self.jobs.verifying_contract)


@contextmanager
def running(**kwargs: Any) -> Iterator[Node]:
    node = Node(**kwargs).start()
    try:
        yield node
    finally:
        node.stop()


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
