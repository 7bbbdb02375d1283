"""Mock data that leaks nothing: synthetic values from the declared schema and coarse,
DP-noised marginals. The liar is the old mock, which drew every column from the real
values, so that names and IDs were published as they are."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from compute_helpers import breast_cancer

from datagora.compute.errors import MockError
from datagora.compute.mock import make_mock


def patients(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    first = ["Amelia", "Bartholomew", "Cordelia", "Desmond", "Evangeline", "Florian"]
    last = ["Ashworth", "Blackwood", "Carrington", "Drummond", "Ellsworth", "Fairbanks"]
    return pd.DataFrame(
        {
            "patient_id": [f"PAT-{k:05d}" for k in rng.choice(90_000, n, replace=False) + 10_000],
            "name": [f"{rng.choice(first)} {rng.choice(last)}" for _ in range(n)],
            "email": [f"user{k}@hospital.example" for k in range(n)],
            "age": rng.integers(18, 90, n),
            "ward": pd.Categorical(rng.choice(["A", "B", "C"], n, p=[0.6, 0.3, 0.1])),
            "smoker": rng.random(n) < 0.3,
            "admitted": pd.to_datetime("2021-01-01")
            + pd.to_timedelta(rng.integers(0, 700, n), unit="D"),
            "weight": np.where(rng.random(n) < 0.1, np.nan, rng.normal(75, 12, n)),
        }
    )


SCHEMA = {
    "age": {"type": "int", "bounds": [0, 120]},
    "ward": {"type": "category", "values": ["A", "B", "C", "D"]},
    "admitted": {"type": "date", "bounds": ["2020-01-01", "2024-01-01"]},
    "weight": {"type": "float", "bounds": [20, 200]},
}


def test_no_real_name_or_id_appears_in_the_mock() -> None:
    real = patients()
    mock = make_mock(real, rows=1000, schema=SCHEMA, seed=3)
    assert list(mock.columns) == list(real.columns) and len(mock) == 1000
    cells = {str(v) for column in mock.columns for v in mock[column].dropna()}
    for column in ("patient_id", "name", "email"):
        leaked = set(real[column]) & cells
        assert not leaked, (column, sorted(leaked)[:3])
    words = {w for name in real["name"] for w in name.split()}
    assert not any(w in cell for cell in cells for w in words)
    # The declared schema shapes the rest.
    assert mock["age"].between(0, 120).all() and mock["age"].dtype == np.int64
    assert set(mock["ward"].dropna()) <= {"A", "B", "C", "D"}
    dates = mock["admitted"].dropna()
    assert dates.between(pd.Timestamp("2020-01-01"), pd.Timestamp("2024-01-01")).all()
    assert (dates.dt.normalize() == dates).all()
    assert mock["weight"].dropna().between(20, 200).all()
    assert mock["patient_id"].dropna().str.match(r"^patient_id-\d{6}$").all()


def test_marginals_are_coarse_and_noisy_but_useful() -> None:
    real = patients(4000)
    mock = make_mock(real, rows=4000, epsilon=8.0, schema=SCHEMA, seed=1)
    share = mock["ward"].value_counts(normalize=True)
    assert share["A"] == pytest.approx(0.6, abs=0.08) and share["C"] == pytest.approx(0.1, abs=0.05)
    assert mock["smoker"].mean() == pytest.approx(0.3, abs=0.08)
    assert mock["weight"].isna().mean() == pytest.approx(0.1, abs=0.05)
    assert mock["weight"].mean() == pytest.approx(real["weight"].mean(), abs=10)  # 10 bins
    # Undeclared numbers: fixed decades, so a value lands in its decade, not on itself.
    bc = breast_cancer()
    loose = make_mock(bc, rows=2000, epsilon=30.0, seed=2)
    assert list(loose.columns) == list(bc.columns)
    assert 100 <= loose["worst_area"].median() <= 10_000
    assert not loose["worst_area"].isin(bc["worst_area"]).any()


def test_a_rare_value_never_shows_and_bad_schemas_are_refused() -> None:
    real = patients()
    real["ward"] = real["ward"].cat.add_categories(["ZETA-ONLY-ONE"])
    real.loc[0, "ward"] = "ZETA-ONLY-ONE"  # one person's undeclared value
    for seed in range(5):
        assert "ZETA-ONLY-ONE" not in set(make_mock(real, schema=SCHEMA, seed=seed)["ward"])
    with pytest.raises(MockError, match="does not have"):
        make_mock(real, schema={"nope": {"type": "int"}})
    with pytest.raises(MockError, match="bounds"):
        make_mock(real, schema={"age": {"type": "int", "bounds": [5, 1]}})
    with pytest.raises(MockError, match="epsilon"):
        make_mock(real, epsilon=0)
