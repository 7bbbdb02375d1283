"""Search correctness on a generated corpus, checked against a plain-Python reference."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from conftest import open_database
from datagora.catalog.db import Database
from datagora.catalog.errors import SearchError
from datagora.catalog.indexer import Indexer
from datagora.catalog.search import SearchQuery, search
from datagora.ledger import Ledger, Pricing, PublishParams
from datagora.storage.metadata import build_metadata
from helpers import dev_account

WORDS = [
    "cancer",
    "cardiac",
    "traffic",
    "sensor",
    "genome",
    "retail",
    "climate",
    "speech",
    "imaging",
    "fraud",
    "energy",
    "soil",
]
TAGS = ["medical", "iot", "finance", "audio", "vision", "tabular", "geo"]
LICENSES = ["CC-BY-4.0", "CC0-1.0", "proprietary", "ODbL-1.0"]


@dataclass
class Doc:
    id: int
    title: str
    description: str
    tags: list[str]
    columns: list[str]
    license: str
    owner: str
    price: int
    pricing: str
    services: set[str]
    dp: bool
    mock: bool
    created: int

    def text_words(self) -> list[str]:
        return " ".join([self.title, self.description, *self.tags, *self.columns]).lower().split()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def indexed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Database, list[Doc]]]:
    """One generated corpus per backend, published on its own chain and indexed once."""
    database = open_database(request.param, tmp_path_factory.mktemp("catalog"))
    try:
        yield database, build_corpus(Ledger.embedded(), database)
    finally:
        if request.param == "postgresql":
            database.drop_all()
        database.engine.dispose()


@pytest.fixture
def corpus(indexed: tuple[Database, list[Doc]]) -> list[Doc]:
    return indexed[1]


@pytest.fixture
def database(indexed: tuple[Database, list[Doc]]) -> Database:
    return indexed[0]


def build_corpus(embedded_ledger: Ledger, database: Database) -> list[Doc]:
    rnd = random.Random(7)
    ix = Indexer(embedded_ledger, database)
    owners = [dev_account(i) for i in (1, 2, 3)]
    docs: list[Doc] = []
    for i in range(48):
        title = " ".join(rnd.sample(WORDS, 2)) + f" set{i}"
        description = " ".join(rnd.sample(WORDS, 3))
        tags = sorted(rnd.sample(TAGS, rnd.randint(0, 3)))
        columns = rnd.sample(["age", "income", "voltage", "diagnosis", "label"], rnd.randint(0, 3))
        services = rnd.choice([["download"], ["compute"], ["download", "compute"]])
        dp = "compute" in services and rnd.random() < 0.5
        mock = rnd.random() < 0.3
        pricing = rnd.choice([Pricing.FIXED, Pricing.FIXED, Pricing.FREE, Pricing.NONE])
        price = rnd.randint(1, 50) * 10**17 if pricing == Pricing.FIXED else 0
        doc = {
            "title": title,
            "description": description,
            "tags": tags,
            "license": rnd.choice(LICENSES),
            "creator": "gen",
            "columns": [{"name": c, "type": "float"} for c in columns],
            "services": [
                {"id": j, "type": s, **({"differential_privacy": True} if s == "compute" else {})}
                if dp
                else {"id": j, "type": s}
                for j, s in enumerate(services)
            ],
        }
        if mock:
            doc["mock"] = {"uri": "datagora://sha256/" + "ab" * 32, "sha256": "ab" * 32}
        meta = build_metadata(doc)
        ix.put_metadata(meta.to_bytes())
        owner = rnd.choice(owners)
        pub = embedded_ledger.factory.publish(
            owner,
            PublishParams(
                metadata_hash=meta.digest(),
                pricing=pricing,
                price=price,
                dispenser_max_per_address=1 if pricing == Pricing.FREE else 0,
            ),
        )
        docs.append(
            Doc(
                pub.dataset,
                title,
                description,
                tags,
                columns,
                meta.license,
                owner.address,
                price,
                pricing.name.lower(),
                set(services),
                dp,
                mock,
                pub.tx.block_number,
            )
        )
    ix.sync()
    return docs


def reference(docs: list[Doc], q: SearchQuery) -> list[Doc]:
    words = q.q.lower().split()
    out = []
    for d in docs:
        text = d.text_words()
        if not all(any(t.startswith(w) for t in text) for w in words):
            continue
        if any(tag not in d.tags for tag in q.tags):
            continue
        if q.license is not None and d.license != q.license:
            continue
        if q.min_price is not None and d.price / 1e18 < q.min_price:
            continue
        if q.max_price is not None and d.price / 1e18 > q.max_price:
            continue
        if q.owner is not None and d.owner.lower() != q.owner.lower():
            continue
        if q.service == "dp" and not d.dp:
            continue
        if q.service in ("download", "compute") and q.service not in d.services:
            continue
        if q.has_mock is not None and d.mock != q.has_mock:
            continue
        if q.pricing is not None and d.pricing != q.pricing:
            continue
        out.append(d)
    return out


def test_filters_match_the_reference(corpus: list[Doc], database: Database) -> None:
    rnd = random.Random(11)
    for _ in range(60):
        q = SearchQuery(
            q=" ".join(w[: rnd.randint(3, len(w))] for w in rnd.sample(WORDS, rnd.randint(0, 2))),
            tags=tuple(rnd.sample(TAGS, rnd.randint(0, 1))),
            license=rnd.choice([None, *LICENSES]),
            min_price=rnd.choice([None, 0.5, 2.0]),
            max_price=rnd.choice([None, 3.0]),
            owner=rnd.choice([None, dev_account(2).address]),
            service=rnd.choice([None, "download", "compute", "dp"]),
            has_mock=rnd.choice([None, True, False]),
            pricing=rnd.choice([None, "fixed", "free"]),
            limit=100,
        )
        expected = {d.id for d in reference(corpus, q)}
        got = search(database, q)
        assert {i.id for i in got.items} == expected, q
        assert got.total == len(expected)


def test_dp_filter_and_flag(corpus: list[Doc], database: Database) -> None:
    found = search(database, SearchQuery(service="dp", limit=100)).items
    assert {i.id for i in found} == {d.id for d in corpus if d.dp} != set()
    assert all(i.differential_privacy and "compute" in i.services for i in found)
    # The generated corpus names no manifest: no size is known.
    assert all(i.size is None for i in found)


def test_sorting_and_pagination(corpus: list[Doc], database: Database) -> None:
    by_price = search(database, SearchQuery(pricing="fixed", sort="price_asc", limit=100)).items
    prices = [int(i.price) for i in by_price]
    assert prices == sorted(prices) and len(prices) == sum(d.pricing == "fixed" for d in corpus)
    newest = [i.id for i in search(database, SearchQuery(sort="newest", limit=100)).items]
    assert newest == sorted(newest, reverse=True)
    pages = [
        search(database, SearchQuery(sort="oldest", limit=7, offset=o)) for o in range(0, 56, 7)
    ]
    ids = [i.id for p in pages for i in p.items]
    assert ids == sorted(d.id for d in corpus)
    assert all(p.total == len(corpus) for p in pages)


def test_relevance_puts_title_matches_first(corpus: list[Doc], database: Database) -> None:
    word = "genome"
    results = search(database, SearchQuery(q=word, limit=100)).items
    in_title = [i.id for i in results if word in i.title]
    assert in_title and [i.id for i in results[: len(in_title)]] == in_title


def test_bad_queries_are_refused(corpus: list[Doc], database: Database) -> None:
    for bad in (
        SearchQuery(limit=0),
        SearchQuery(limit=101),
        SearchQuery(offset=-1),
        SearchQuery(min_price=3, max_price=1),
        SearchQuery(q="x" * 501),
    ):
        with pytest.raises(SearchError):
            search(database, bad)
    # Query syntax is never passed through: operators and quotes are just words.
    assert search(database, SearchQuery(q='"cancer" OR NEAR(x) * -- ;')).total == 0


def test_metadata_hash_is_what_is_searched(corpus: list[Doc], database: Database) -> None:
    assert hashlib.sha256(b"x").digest()  # corpus built through real metadata documents
    assert search(database, SearchQuery(limit=100)).total == len(corpus)
