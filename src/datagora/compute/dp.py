"""Differential privacy: declared epsilon, explicit bounds, one budget per dataset.

Two halves:

**On the node** — :class:`BudgetStore` (SQLite in the node's data directory) keeps the
epsilon reserved by accepted jobs and spent by jobs that ran, per job, and sums it per
*dataset across every consumer*: the dataset's budget is one, so a second address
does not get a second budget. An optional per-consumer cap limits what one consumer
may take of it. :func:`check_dp_params` validates a job's declaration. A job on a
dataset that requires DP must declare, in its signed parameters::

    "dp": {"epsilon": 0.5, "bounds": {"<column>": [lower, upper], ...}}

with epsilon at least 0.001 (the chain records milli-epsilon) and every bound finite
with lower < upper: bounds are never inferred from the data. A job whose epsilon
exceeds what is left is refused before it is recorded or run. The epsilon is charged
when the job runs (succeeded or not: a failed job's logs still leave) and recorded on
chain with the job's completion (``epsilon_milli``, rounded up); the node rebuilds
what was spent from those records when it starts (:func:`charges_on_chain`,
:meth:`BudgetStore.rebuild`), so losing ``budget.db`` does not reset a budget.

Which code may run without review on a DP dataset is decided by the node, not by a
declaration: :func:`~datagora.compute.algorithms.check_dp_algorithm` lets a hash the
owner trusts through only if it is one of the node's own DP algorithms
(``fedavg-logistic-dp``, ``dp-query``); any other code waits for the owner's review,
which says it is not DP.

**In the sandbox** — the runner installs a :class:`PrivacySession` holding the
declared epsilon and bounds; the algorithm trains through it
(``from datagora.compute import dp; s = dp.session()``):
``s.logistic_regression(eps, columns)``, ``s.gaussian_nb(eps, columns)``,
``s.mean(values, column, eps)``, ``s.clip(frame, columns)``. Every call spends from
a diffprivlib ``BudgetAccountant`` capped at the declared epsilon, and a call past it
raises :class:`EpsilonExceeded` (the job fails); ``s.spent`` is what the job used.

Trust model, plainly: an algorithm other than the node's DP algorithms is arbitrary
Python. Nothing in the sandbox *forces* it to use the session — it could read the
input and write exact statistics. That is why such code never runs on a DP dataset
without the owner's review, and why the review says it is not DP. The node's own DP
algorithms are pinned by the hash of their files: the code that runs is the code
whose privacy argument is written in it. What the node enforces regardless of the
code is the accounting: the declared epsilon is charged against the dataset's
budget and written on chain, and over-budget jobs never run.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from datagora.compute.errors import BudgetExceeded, EpsilonExceeded, JobRefused

if TYPE_CHECKING:
    from datagora.ledger import Ledger

__all__ = [
    "MIN_EPSILON",
    "Budget",
    "BudgetStore",
    "Charge",
    "EpsilonExceeded",
    "PrivacySession",
    "charges_on_chain",
    "check_dp_params",
    "install",
    "session",
    "session_or_declared",
    "to_unit_box",
]

_SCHEMA: Final = 1
MIN_EPSILON: Final = 0.001
"""The smallest epsilon a job may declare: the chain records milli-epsilon."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A dataset's privacy budget (shared by every consumer) as one consumer sees it."""

    dataset: int
    consumer: str
    budget: float
    """The dataset's budget, across all consumers."""
    spent: float
    reserved: float
    consumer_budget: float = 0.0
    """The per-consumer cap (0: none beyond the dataset's budget)."""
    consumer_spent: float = 0.0
    consumer_reserved: float = 0.0

    @property
    def remaining(self) -> float:
        left = self.budget - self.spent - self.reserved
        if self.consumer_budget > 0:
            left = min(left, self.consumer_budget - self.consumer_spent - self.consumer_reserved)
        return max(0.0, left)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "consumer": self.consumer,
            "budget": self.budget,
            "spent": self.spent,
            "reserved": self.reserved,
            "consumer_budget": self.consumer_budget,
            "consumer_spent": self.consumer_spent,
            "consumer_reserved": self.consumer_reserved,
            "remaining": self.remaining,
        }


@dataclass(frozen=True, slots=True)
class Charge:
    """Epsilon a job spent, as recorded on chain."""

    job: int
    dataset: int
    consumer: str
    epsilon: float


def check_dp_params(params: Any) -> tuple[float, dict[str, tuple[float, float]]]:
    """The declared epsilon and bounds of a job on a DP dataset, or :class:`JobRefused`."""
    dp = params.get("dp") if isinstance(params, Mapping) else None
    if not isinstance(dp, Mapping):
        raise JobRefused(
            'this dataset requires differential privacy: declare "dp": {"epsilon": ..., '
            '"bounds": {column: [lower, upper]}} in the job parameters',
            400,
        )
    epsilon = dp.get("epsilon")
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float):
        raise JobRefused("dp.epsilon must be a number", 400)
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise JobRefused("dp.epsilon must be a positive finite number", 400)
    if epsilon < MIN_EPSILON:
        raise JobRefused(
            f"dp.epsilon must be at least {MIN_EPSILON:g} (the chain records milli-epsilon)",
            400,
        )
    raw = dp.get("bounds")
    if not isinstance(raw, Mapping) or not raw:
        raise JobRefused(
            "dp.bounds must give explicit [lower, upper] bounds for every column used: "
            "bounds are never inferred from the data",
            400,
        )
    bounds: dict[str, tuple[float, float]] = {}
    for column, pair in raw.items():
        ok = (
            isinstance(pair, Sequence)
            and len(pair) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pair)
            and all(math.isfinite(v) for v in pair)
            and pair[0] < pair[1]
        )
        if not ok:
            raise JobRefused(
                f"dp.bounds[{column!r}] must be [lower, upper], finite, lower<upper", 400
            )
        bounds[str(column)] = (float(pair[0]), float(pair[1]))
    return float(epsilon), bounds


class BudgetStore:
    """Epsilon reserved and spent per job, summed per dataset (and per consumer), in
    SQLite; thread-safe."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA):
            raise JobRefused(f"{path} is a budget store of schema {version}, not {_SCHEMA}", 500)
        self._db.executescript(
            "CREATE TABLE IF NOT EXISTS charges ("
            " job INTEGER PRIMARY KEY, dataset INTEGER NOT NULL, consumer TEXT NOT NULL,"
            " epsilon REAL NOT NULL, state TEXT NOT NULL"
            " CHECK (state IN ('reserved', 'spent', 'released')));"
            "CREATE INDEX IF NOT EXISTS charges_by_owner ON charges (dataset, consumer);"
            f"PRAGMA user_version={_SCHEMA};"
        )

    def _sums(self, dataset: int, consumer: str | None = None) -> tuple[float, float]:
        where, args = "dataset = ?", list[Any]([dataset])
        if consumer is not None:
            where += " AND consumer = ?"
            args.append(consumer.lower())
        rows = self._db.execute(
            f"SELECT state, COALESCE(SUM(epsilon), 0) FROM charges WHERE {where} GROUP BY state",
            args,
        ).fetchall()
        sums = {state: float(total) for state, total in rows}
        return sums.get("spent", 0.0), sums.get("reserved", 0.0)

    def _budget(self, dataset: int, consumer: str, total: float, cap: float) -> Budget:
        spent, reserved = self._sums(dataset)
        mine_spent, mine_reserved = self._sums(dataset, consumer)
        return Budget(dataset, consumer, total, spent, reserved, cap, mine_spent, mine_reserved)

    def budget(self, dataset: int, consumer: str, total: float, cap: float = 0.0) -> Budget:
        """What is spent, reserved and left of `dataset`'s budget `total` (all consumers),
        and of `consumer`'s `cap` on it (0: no cap)."""
        with self._lock:
            return self._budget(dataset, consumer, total, cap)

    @staticmethod
    def _refuse(epsilon: float, budget: Budget) -> None:
        left = budget.budget - budget.spent - budget.reserved
        if epsilon > left + 1e-12:
            raise BudgetExceeded(
                f"the job declares epsilon {epsilon:g} but dataset {budget.dataset} has "
                f"{max(0.0, left):g} left of {budget.budget:g} (one budget for every consumer)"
            )
        if budget.consumer_budget > 0:
            mine = budget.consumer_budget - budget.consumer_spent - budget.consumer_reserved
            if epsilon > mine + 1e-12:
                raise BudgetExceeded(
                    f"the job declares epsilon {epsilon:g} but {budget.consumer} has "
                    f"{max(0.0, mine):g} left of the per-consumer cap "
                    f"{budget.consumer_budget:g} on dataset {budget.dataset}"
                )

    def check(
        self, dataset: int, consumer: str, epsilon: float, total: float, cap: float = 0.0
    ) -> None:
        """Raise :class:`BudgetExceeded` if `epsilon` does not fit in what is left."""
        self._refuse(epsilon, self.budget(dataset, consumer, total, cap))

    def reserve(
        self,
        job: int,
        dataset: int,
        consumer: str,
        epsilon: float,
        total: float,
        cap: float = 0.0,
    ) -> None:
        """Reserve `epsilon` for `job` atomically, or raise :class:`BudgetExceeded`."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._refuse(epsilon, self._budget(dataset, consumer, total, cap))
                self._db.execute(
                    "INSERT INTO charges (job, dataset, consumer, epsilon, state)"
                    " VALUES (?, ?, ?, ?, 'reserved')",
                    (job, dataset, consumer.lower(), epsilon),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def rebuild(self, charges: Iterable[Charge]) -> int:
        """Make every charge recorded on chain count as spent here (a job this store has
        not seen is added; one it holds as reserved becomes spent); how many changed."""
        changed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for c in charges:
                    cur = self._db.execute(
                        "INSERT INTO charges (job, dataset, consumer, epsilon, state)"
                        " VALUES (?, ?, ?, ?, 'spent') ON CONFLICT (job) DO UPDATE"
                        " SET state = 'spent', epsilon = MAX(epsilon, excluded.epsilon)"
                        " WHERE state != 'spent' OR epsilon < excluded.epsilon",
                        (c.job, c.dataset, c.consumer.lower(), c.epsilon),
                    )
                    changed += cur.rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return changed

    def _set(self, job: int, state: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE charges SET state = ? WHERE job = ? AND state = 'reserved'", (state, job)
            )

    def spend(self, job: int) -> None:
        """The job ran: its reservation becomes spent."""
        self._set(job, "spent")

    def release(self, job: int) -> None:
        """The job will never run (denied): its reservation is returned."""
        self._set(job, "released")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def charges_on_chain(ledger: Ledger) -> list[Charge]:
    """Every job completion on chain that recorded epsilon, with its consumer (from the
    job's record): what :meth:`BudgetStore.rebuild` takes."""
    consumers: dict[int, str] = {}
    charges: list[Charge] = []
    for event in ledger.events():
        if event.name == "JobRecorded":
            consumers[int(event["job"])] = str(event["consumer"])
        elif event.name == "JobCompleted" and int(event["epsilon_milli"]) > 0:
            job = int(event["job"])
            charges.append(
                Charge(
                    job,
                    int(event["dataset"]),
                    consumers.get(job) or ledger.compute.job(job).consumer,
                    int(event["epsilon_milli"]) / 1000,
                )
            )
    return charges


# ---------------------------------------------------------------- inside the sandbox


def to_unit_box(X: Any, columns: Sequence[str], lower: Any, upper: Any) -> Any:
    """`columns` of `X` (a DataFrame, or an array in that column order) clipped to
    [lower, upper] and mapped affinely onto [-1, 1]; each row's L2 norm is then at most
    ``sqrt(len(columns))`` whatever the data."""
    import numpy as np

    if hasattr(X, "columns"):
        X = X[list(columns)]
    values = np.asarray(X, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(columns):
        raise ValueError(f"expected {len(columns)} columns {list(columns)}, got {values.shape}")
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    return (np.clip(values, lower, upper) - (lower + upper) / 2) / ((upper - lower) / 2)


class PrivacySession:
    """The algorithm's only sanctioned way to the data under DP: spends at most the declared
    epsilon, with the declared bounds."""

    def __init__(
        self,
        epsilon: float,
        bounds: Mapping[str, tuple[float, float]],
        *,
        allow_seed: bool = True,
    ) -> None:
        import diffprivlib

        self._dpl = diffprivlib
        # In a job the noise must come from fresh entropy: whoever knows the seed can
        # redraw the noise and subtract it. Seeds are for local, reproducible tests.
        self.allow_seed = allow_seed
        self.epsilon = float(epsilon)
        self.bounds = {str(k): (float(v[0]), float(v[1])) for k, v in bounds.items()}
        self.accountant = self._dpl.BudgetAccountant(epsilon=self.epsilon)

    @property
    def spent(self) -> float:
        return float(self.accountant.total()[0])

    @property
    def remaining(self) -> float:
        return float(self.accountant.remaining()[0])

    def _take(self, epsilon: float) -> None:
        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise EpsilonExceeded("epsilon must be positive and finite")
        if epsilon > self.remaining + 1e-12:
            raise EpsilonExceeded(
                f"asked for epsilon {epsilon:g}; {self.remaining:g} of the declared "
                f"{self.epsilon:g} is left"
            )

    def _bounds(self, columns: Sequence[str]) -> tuple[Any, Any]:
        import numpy as np

        missing = [c for c in columns if c not in self.bounds]
        if missing:
            raise EpsilonExceeded(
                f"no declared bounds for columns {missing}: declare [lower, upper] for them in "
                'the job\'s "dp": {"bounds": ...}; bounds are never inferred from the data'
            )
        lower = np.array([self.bounds[c][0] for c in columns])
        upper = np.array([self.bounds[c][1] for c in columns])
        return lower, upper

    def clip(self, frame: Any, columns: Sequence[str]) -> Any:
        """`frame[columns]` as a float array clipped to the declared bounds."""
        import numpy as np

        lower, upper = self._bounds(columns)
        return np.clip(frame[list(columns)].to_numpy(dtype=float), lower, upper)

    def gaussian_nb(self, epsilon: float, columns: Sequence[str]) -> Any:
        """A diffprivlib GaussianNB over `columns`, bounded by the declaration."""
        self._take(epsilon)
        models = self._dpl.models
        return models.GaussianNB(
            epsilon=epsilon, bounds=self._bounds(columns), accountant=self.accountant
        )

    def logistic_regression(
        self,
        epsilon: float,
        columns: Sequence[str],
        *,
        C: float = 1.0,
        max_iter: int = 100,
        random_state: int | None = None,
    ) -> Any:
        """An epsilon-DP logistic regression over `columns`, bounded by the declaration.

        `random_state` is for local tests only: in a job (the session the node installs)
        a seed is refused, since whoever knows it can redraw the noise.

        Returns a scikit-learn ``Pipeline``: :func:`to_unit_box` with the declared bounds,
        then diffprivlib's ``LogisticRegression(epsilon, data_norm=sqrt(len(columns)))``.
        ``fit(frame, y)`` takes the frame (or an array in `columns` order); the last step's
        ``coef_``/``intercept_`` are the model. The epsilon is spent from this session when
        ``fit`` runs, so :attr:`spent` reports it.

        Privacy argument. diffprivlib's model is objective perturbation (Chaudhuri,
        Monteleoni & Sarwate, JMLR 2011, Algorithm 2): the L2-regularised logistic loss
        gets a random linear term ``b·w/n`` (and extra regularisation where needed), with
        ``b`` drawn from a density proportional to ``exp(-epsilon'·||b|| / 2)``, which is
        epsilon-DP for rows of L2 norm at most 1; diffprivlib scales it to rows of norm at
        most ``data_norm`` (``sqrt(data_norm**2 + 1)`` with the intercept column), and
        clips every row to that norm before training, so the bound holds by construction.
        Here the bound is explicit, not read from the data: every declared column is
        clipped to its declared [lower, upper] and mapped onto [-1, 1] by a fixed,
        row-by-row transformation, so each row's norm is at most ``sqrt(len(columns))``
        and changing one row of the input changes one row of the training set. With more
        than two classes diffprivlib trains one-vs-rest with ``epsilon / n_classes`` each,
        epsilon in total (sequential composition). Predictions and the model's weights
        are post-processing and cost nothing more. As in the paper, the argument assumes
        the perturbed objective is minimised exactly; L-BFGS minimises it to ``tol``.
        """
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer

        if not columns:
            raise ValueError("logistic_regression needs at least one column")
        if random_state is not None and not self.allow_seed:
            raise EpsilonExceeded(
                "random_state is refused in a job: a known seed reproduces the privacy "
                "noise; leave it None"
            )
        self._take(epsilon)
        lower, upper = self._bounds(columns)
        box = FunctionTransformer(
            to_unit_box,
            kw_args={"columns": list(columns), "lower": lower, "upper": upper},
        )
        model = self._dpl.models.LogisticRegression(
            epsilon=epsilon,
            data_norm=math.sqrt(len(columns)),
            C=C,
            max_iter=max_iter,
            random_state=random_state,
            accountant=self.accountant,
        )
        return Pipeline([("bounds", box), ("model", model)])

    def mean(self, values: Any, column: str, epsilon: float) -> float:
        """A DP mean of `values` (clipped to the column's declared bounds)."""
        import numpy as np

        self._take(epsilon)
        lo, hi = self.bounds[column] if column in self.bounds else self._bounds([column])
        clipped = np.clip(np.asarray(values, dtype=float), lo, hi)
        return float(
            self._dpl.tools.mean(
                clipped, epsilon=epsilon, bounds=(lo, hi), accountant=self.accountant
            )
        )


_session: PrivacySession | None = None


def install(config: Mapping[str, Any]) -> None:
    """Called by the runner before the algorithm: the job's declared epsilon and bounds."""
    global _session
    _session = PrivacySession(config["epsilon"], config["bounds"], allow_seed=False)


def session() -> PrivacySession:
    """The job's privacy session (only in a job on a dataset that requires DP)."""
    if _session is None:
        raise EpsilonExceeded("this job has no privacy session: its dataset does not require DP")
    return _session


def session_or_declared(params: Mapping[str, Any]) -> PrivacySession:
    """The job's privacy session; on a dataset that does not require DP, a session from
    the job's own ``params["dp"]`` declaration (a consumer may choose DP where the owner
    does not require it; nothing is charged on the node then)."""
    if _session is not None:
        return _session
    try:
        epsilon, bounds = check_dp_params(params)
    except JobRefused as exc:
        raise EpsilonExceeded(str(exc)) from None
    return PrivacySession(epsilon, bounds, allow_seed=False)
