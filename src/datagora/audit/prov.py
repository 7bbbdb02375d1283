"""W3C PROV export of a dataset's history, built from its ledger timeline.

Identifiers live in the ``datagora`` namespace:

* entities: ``dataset/<id>/v<n>`` (each version, with its hashes),
  ``dataset/<id>/nft`` (the data NFT), ``dataset/<id>/order/<tx>-<log>``
  (an order), ``access/<request id>`` (a request and its grant);
* activities: ``tx/<tx hash>/<log index>`` — one per event, typed ``publish``,
  ``update``, ``order``, ``sale``, ``dispense``, ``request``, ``grant``, ``deny``,
  ``revoke``, ``transfer``, ``state``, ``job``, ``job-approve``, ``job-deny``,
  ``compute``, ``compute-failed``; block time as start and end;
* agents: ``account/<address>``.

Version n+1 ``wasDerivedFrom`` version n through its update; orders, sales,
access requests and jobs ``used`` the version current at the time; a successful
job's model is derived from the version it ran on.

Who acted is the transaction's sender, read from its receipt, wherever the event
does not name the actor: the controller who granted, denied or revoked access,
who approved or denied a job, the operator who settled it. A sender who is not
the dataset's holder at that moment (an operator or delegate the contracts
allow) ``actedOnBehalfOf`` the holder for that activity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prov.model import ProvActivity, ProvDocument, ProvEntity, QualifiedName

from datagora.audit.timeline import EMPTY32, Kind, TimelineEntry, timeline
from datagora.ledger import Ledger
from datagora.ledger.base import ZERO_ADDRESS

NAMESPACE = "https://datagora.org/ns/"
PREFIX = "datagora"


def _time(e: TimelineEntry) -> datetime:
    return datetime.fromtimestamp(e.timestamp, UTC)


def _hex(value: bytes) -> str:
    return "" if value == EMPTY32 else value.hex()


class _Builder:
    def __init__(
        self, chain_id: int, nft_contract: str, dataset: int, senders: Mapping[str, str]
    ) -> None:
        self.senders = senders
        self.holder: str | None = None
        self.doc = ProvDocument()
        self.ns = self.doc.add_namespace(PREFIX, NAMESPACE)
        self.dataset = dataset
        self.current: ProvEntity | None = None
        self.agents: dict[str, Any] = {}
        self.jobs: dict[int, dict[str, Any]] = {}
        self.nft = self.doc.entity(
            self.q(f"dataset/{dataset}/nft"),
            {
                "prov:type": self.q("DataNFT"),
                self.q("chainId"): chain_id,
                self.q("contract"): nft_contract,
                self.q("tokenId"): dataset,
            },
        )

    def q(self, local: str) -> QualifiedName:
        return self.ns[local]

    def agent(self, address: str) -> Any:
        if address not in self.agents:
            self.agents[address] = self.doc.agent(
                self.q(f"account/{address}"),
                {"prov:type": self.q("Account"), self.q("address"): address},
            )
        return self.agents[address]

    def activity(self, e: TimelineEntry, kind: str) -> ProvActivity:
        return self.doc.activity(
            self.q(f"tx/{e.tx_hash}/{e.log_index}"),
            _time(e),
            _time(e),
            {
                "prov:type": self.q(kind),
                self.q("txHash"): e.tx_hash,
                self.q("blockNumber"): e.block_number,
                "prov:label": e.text,
            },
        )

    def version(self, e: TimelineEntry, n: int, author: str, kind: str) -> None:
        a = e.args
        prefix = "" if n == 1 else "new_"
        act = self.activity(e, kind)
        entity = self.doc.entity(
            self.q(f"dataset/{self.dataset}/v{n}"),
            {
                "prov:type": self.q("DatasetVersion"),
                self.q("dataset"): self.dataset,
                self.q("version"): n,
                self.q("metadataHash"): _hex(a[f"{prefix}metadata_hash"]),
                self.q("metadataUri"): str(a["metadata_uri"]),
                self.q("manifestHash"): _hex(a[f"{prefix}manifest_hash"]),
                self.q("merkleRoot"): _hex(a[f"{prefix}merkle_root"]),
            },
        )
        who = self.agent(author)
        self.doc.wasGeneratedBy(entity, act, _time(e))
        self.doc.wasAssociatedWith(act, who)
        self.doc.wasAttributedTo(entity, who)
        if self.current is not None:
            self.doc.used(act, self.current, _time(e))
            self.doc.wasDerivedFrom(entity, self.current, act)
        else:
            self.doc.wasGeneratedBy(self.nft, act, _time(e))
            self.doc.wasAttributedTo(self.nft, who)
        self.current = entity

    def acted(self, act: ProvActivity, e: TimelineEntry, role: str) -> Any:
        """Associate the transaction's sender with `act` (on behalf of the holder if
        the sender is someone else); the sender's agent."""
        sender = self.senders.get(e.tx_hash) or self.holder
        if sender is None:
            return None
        who = self.agent(sender)
        self.doc.wasAssociatedWith(act, who, None, None, {"prov:role": self.q(role)})
        if self.holder is not None and sender.lower() != self.holder.lower():
            self.doc.actedOnBehalfOf(who, self.agent(self.holder), act)
        return who

    def use_current(self, act: ProvActivity, e: TimelineEntry) -> None:
        if self.current is not None:
            self.doc.used(act, self.current, _time(e))

    def add(self, e: TimelineEntry) -> None:
        a = e.args
        if e.kind is Kind.CREATED:
            self.holder = str(a["owner"])
            self.version(e, 1, a["owner"], "publish")
        elif e.kind is Kind.VERSION:
            self.version(e, int(a["version"]), a["updater"], "update")
        elif e.kind is Kind.ORDER:
            act = self.activity(e, "order")
            order = self.doc.entity(
                self.q(f"dataset/{self.dataset}/order/{e.tx_hash}-{e.log_index}"),
                {
                    "prov:type": self.q("Order"),
                    self.q("serviceId"): int(a["service_id"]),
                    self.q("expiresAt"): int(a["expires_at"]),
                },
            )
            self.doc.wasGeneratedBy(order, act, _time(e))
            self.doc.wasAssociatedWith(
                act, self.agent(a["consumer"]), None, None, {"prov:role": self.q("consumer")}
            )
            if a["payer"] != a["consumer"]:
                self.doc.wasAssociatedWith(
                    act, self.agent(a["payer"]), None, None, {"prov:role": self.q("payer")}
                )
            self.doc.wasAttributedTo(order, self.agent(a["consumer"]))
            self.use_current(act, e)
        elif e.kind in (Kind.REQUEST, Kind.GRANT, Kind.DENIAL, Kind.REVOCATION):
            self.access(e)
        elif e.kind is Kind.HOLDER and a["sender"] != ZERO_ADDRESS:
            act = self.activity(e, "transfer")
            self.doc.used(act, self.nft, _time(e))
            self.doc.wasAssociatedWith(
                act, self.agent(a["sender"]), None, None, {"prov:role": self.q("from")}
            )
            self.doc.wasAssociatedWith(
                act, self.agent(a["receiver"]), None, None, {"prov:role": self.q("to")}
            )
            self.holder = str(a["receiver"])
        elif e.kind is Kind.SALE:
            act = self.activity(e, "sale")
            self.doc.wasAssociatedWith(
                act, self.agent(a["buyer"]), None, None, {"prov:role": self.q("buyer")}
            )
            self.doc.wasAssociatedWith(
                act, self.agent(a["publisher"]), None, None, {"prov:role": self.q("seller")}
            )
            self.use_current(act, e)
        elif e.kind is Kind.DISPENSE:
            act = self.activity(e, "dispense")
            self.doc.wasAssociatedWith(
                act, self.agent(a["to"]), None, None, {"prov:role": self.q("receiver")}
            )
            self.use_current(act, e)
        elif e.kind is Kind.STATE:
            act = self.activity(e, "state")
            # A transfer's new epoch (DatasetTransferred) is the previous holder's act.
            self.doc.wasAssociatedWith(act, self.agent(a.get("updater", a.get("previous"))))
            self.use_current(act, e)
        elif e.kind is Kind.JOB:
            self.job(e)
        elif e.kind is Kind.JOB_DECISION:
            act = self.activity(e, "job-approve" if a["approved"] else "job-deny")
            self.doc.used(act, self.q(f"job/{int(a['job'])}"), _time(e))
            self.acted(act, e, "controller")
        elif e.kind is Kind.JOB_RESULT:
            job = self.jobs.get(int(a["job"]))
            if a["succeeded"] and job is not None:
                self.model(e, job)
            else:
                act = self.activity(e, "compute-failed" if not a["succeeded"] else "compute")
                self.doc.used(act, self.q(f"job/{int(a['job'])}"), _time(e))
                self.acted(act, e, "operator")

    def job(self, e: TimelineEntry) -> None:
        """A job's record: what the consumer asked to run on which version."""
        a = e.args
        self.jobs[int(a["job"])] = dict(a)
        act = self.activity(e, "job")
        record = self.doc.entity(
            self.q(f"job/{int(a['job'])}"),
            {
                "prov:type": self.q("ComputeJob"),
                self.q("job"): int(a["job"]),
                self.q("version"): int(a["version"]),
                self.q("algorithm"): _hex(a["algorithm"]),
                self.q("params"): _hex(a["params"]),
            },
        )
        self.doc.wasGeneratedBy(record, act, _time(e))
        consumer = self.agent(a["consumer"])
        self.doc.wasAssociatedWith(act, consumer, None, None, {"prov:role": self.q("consumer")})
        self.doc.wasAttributedTo(record, consumer)
        self.doc.used(act, self.q(f"dataset/{self.dataset}/v{int(a['version'])}"), _time(e))

    def model(self, e: TimelineEntry, job: dict[str, Any]) -> None:
        """A compute job's result: a model derived from the dataset version it ran on."""
        a = e.args
        act = self.activity(e, "compute")
        version = self.q(f"dataset/{self.dataset}/v{int(job['version'])}")
        algorithm = self.doc.entity(
            self.q(f"algorithm/{_hex(job['algorithm'])}"),
            {"prov:type": self.q("Algorithm"), self.q("sha256"): _hex(job["algorithm"])},
        )
        model = self.doc.entity(
            self.q(f"model/{_hex(a['result'])}"),
            {
                "prov:type": self.q("Model"),
                self.q("resultHash"): _hex(a["result"]),
                self.q("job"): int(a["job"]),
                self.q("epsilonMilli"): int(a["epsilon_milli"]),
            },
        )
        self.doc.used(act, version, _time(e))
        self.doc.used(act, algorithm, _time(e))
        self.doc.wasGeneratedBy(model, act, _time(e))
        self.doc.wasDerivedFrom(model, version, act)
        self.doc.used(act, self.q(f"job/{int(a['job'])}"), _time(e))
        consumer = self.agent(job["consumer"])
        self.doc.wasAssociatedWith(act, consumer, None, None, {"prov:role": self.q("consumer")})
        self.doc.wasAttributedTo(model, consumer)
        self.acted(act, e, "operator")

    def access(self, e: TimelineEntry) -> None:
        a = e.args
        kind = {
            Kind.REQUEST: "request",
            Kind.GRANT: "grant",
            Kind.DENIAL: "deny",
            Kind.REVOCATION: "revoke",
        }[e.kind]
        act = self.activity(e, kind)
        record = self.q(f"access/{a['request_id']}")
        consumer = self.agent(a["consumer"])
        if e.kind is Kind.REQUEST:
            entity = self.doc.entity(
                record,
                {
                    "prov:type": self.q("AccessRequest"),
                    self.q("requestId"): int(a["request_id"]),
                    self.q("purpose"): str(a["purpose"]),
                },
            )
            self.doc.wasGeneratedBy(entity, act, _time(e))
            self.doc.wasAttributedTo(entity, consumer)
            self.doc.wasAssociatedWith(act, consumer)
            self.use_current(act, e)
        elif e.kind is Kind.GRANT:
            grant = self.doc.entity(
                self.q(f"access/{a['request_id']}/grant"),
                {
                    "prov:type": self.q("AccessGrant"),
                    self.q("expiresAt"): int(a["expires_at"]),
                    self.q("consumer"): str(a["consumer"]),
                },
            )
            self.doc.used(act, record, _time(e))
            self.doc.wasGeneratedBy(grant, act, _time(e))
            self.doc.wasDerivedFrom(grant, record, act)
            granter = self.acted(act, e, "controller")
            if granter is not None:
                self.doc.wasAttributedTo(grant, granter)
        elif e.kind is Kind.REVOCATION:
            self.doc.wasInvalidatedBy(self.q(f"access/{a['request_id']}/grant"), act, _time(e))
            self.acted(act, e, "controller")
        else:
            self.doc.used(act, record, _time(e))
            self.acted(act, e, "controller")


_SENDER_KINDS = frozenset(
    {Kind.GRANT, Kind.DENIAL, Kind.REVOCATION, Kind.JOB_DECISION, Kind.JOB_RESULT}
)
"""Events that do not name who acted: the transaction's sender did."""


def _senders(ledger: Ledger, entries: Sequence[TimelineEntry]) -> dict[str, str]:
    """tx hash -> sender, for the events whose actor only the transaction names."""
    hashes = sorted({e.tx_hash for e in entries if e.kind in _SENDER_KINDS})
    return {tx: str(ledger.chain.transaction_receipt(tx)["from"]) for tx in hashes}


def to_prov(
    ledger: Ledger, dataset: int, entries: Sequence[TimelineEntry] | None = None
) -> ProvDocument:
    """The W3C PROV document of `dataset`'s history (from `entries` if already read)."""
    history = entries if entries is not None else timeline(ledger, dataset)
    builder = _Builder(
        ledger.chain.chain_id, ledger.data_nft.address, dataset, _senders(ledger, history)
    )
    for e in history:
        builder.add(e)
    return builder.doc


def prov_json(doc: ProvDocument) -> str:
    """PROV-JSON text (loadable with ``prov.read`` or ``ProvDocument.deserialize``)."""
    return str(doc.serialize(format="json"))


def write_prov(doc: ProvDocument, path: Path) -> None:
    """Write `doc` as PROV-JSON to `path`."""
    path.write_text(prov_json(doc), encoding="utf-8")
