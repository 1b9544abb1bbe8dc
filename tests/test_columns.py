"""Column roles (issue 23): inferred from the values of train and test together, declared where
the guess is wrong, and turned into features by role: dates into their parts, text into its
statistics and an in-fold text model, categories of any cardinality, ids and constants dropped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import ConfigError, DataError
from pipeline.tabular.columns import column_roles, infer
from pipeline.tabular.features import FeatureParams, build_features
from pipeline.tabular.tables import Tables, TableSpec

N = 400


def role(train, test=None) -> str:
    train = pd.Series(train)
    return infer("c", train, pd.Series(train.iloc[:0] if test is None else test)).role


def cycle(values, n=N) -> list:
    return [values[i % len(values)] for i in range(n)]


@pytest.mark.parametrize("values, expected", [
    (cycle(["1.5", "2", " 30 ", "4e2", "-1"]), "number"),  # numbers stored as text
    (cycle(["2021-03-04", "2020-12-31", "2019-01-15", None]), "date"),
    (cycle(["2013-01-14 15:45", "2013-02-01 08:00", "2014-07-30 23:59"]), "date"),
    (cycle(["9/30/1990 0:00:00", "1/31/1991 0:00:00", "12/1/1995 0:00:00"]), "date"),
    (cycle(["31/12/2020", "01/02/2021", "15/06/2019"]), "date"),  # day first: a day above 12 tells
    (cycle(["True", "False"]), "boolean"),
    (cycle(["yes", "no", None]), "boolean"),
    (cycle([1, 0, 1, 1]), "boolean"),
    (cycle(["Y", "N"]), "boolean"),
    (cycle([None, None]), "empty"),
    (cycle(["same"]), "constant"),
    (cycle([7.0]), "constant"),
    (cycle(["2-10", "11-100", None]), "category"),  # counts, not dates: no year
    (cycle(["red", "green", "blue"]), "category"),
    ([f"ID{i:06d}" for i in range(N)], "id"),
    (list(range(1000, 1000 + N)), "id"),  # a sequential integer in every row
    (list(np.random.default_rng(0).normal(size=N)), "number"),  # distinct floats are numbers
    ([f"the {w} cat sat on mat {i}" for i, w in enumerate(cycle(["black", "grey"]))], "text"),
    (cycle(["HIT A FLOCK OF GULLS NO DAMAGE", "ONE BIRD", "BIRD STRIKE ON THE RADOME, NO DAMAGE", None]), "text"),
])
def test_role_inference_on_tricky_columns(values, expected):
    assert role(values) == expected


def test_a_column_numeric_in_train_and_text_in_a_few_test_cells_is_numbers():
    train = pd.Series(np.arange(N, dtype=float) % 17)
    test = pd.Series([str(v) for v in range(95)] + ["unknown"] * 5)
    column = infer("amount", train, test)
    assert column.role == "number" and "5 cells are not numbers ('unknown')" in column.note
    assert column.read(test).isna().sum() == 5


def test_a_duplicate_column_is_dropped_and_names_the_original():
    frame = pd.DataFrame({"a": cycle(["x", "y", "z"]), "b": cycle(["x", "y", "z"]), "c": np.arange(N) % 5})
    roles = column_roles(frame, frame.iloc[:0])
    assert [c.role for c in roles] == ["category", "duplicate", "number"]
    assert "'a'" in roles.columns[1].note


def test_declared_roles_override_and_bad_declarations_are_one_line():
    frame = pd.DataFrame({"zip": cycle([10115, 20095, 80331]), "when": cycle(["2020-01-02", "2021-03-04"]),
                          "note": cycle(["a", "b"])})
    roles = column_roles(frame, frame.iloc[:0], {"category": ["zip"], "drop": ["note"]})
    assert [(c.role, c.declared) for c in roles] == [("category", True), ("date", False), ("dropped", True)]
    for declared, needle, error in [
        ({"colour": ["zip"]}, "unknown role 'colour'", ConfigError),
        ({"text": ["nope"]}, "no column 'nope'", ConfigError),
        ({"text": ["note"], "drop": ["note"]}, "column 'note' is declared both text and drop", ConfigError),
        ({"date": ["note"]}, "column 'note' is declared a date, but only 0%", DataError),
        ({"number": ["note"]}, "column 'note' is declared a number", DataError),
    ]:
        with pytest.raises(error) as caught:
            column_roles(frame, frame.iloc[:0], declared, where="pipeline.toml [target.t]")
        assert needle in str(caught.value) and "\n" not in str(caught.value)


def messy(n: int = 600, seed: int = 0) -> Tables:
    """A table with a date (with gaps), a 300-level category, free text, an id, a constant and a
    duplicate; the label follows the date's month, the category and a word of the text."""
    r = np.random.default_rng(seed)
    days = pd.Timestamp("2020-01-01") + pd.to_timedelta(r.integers(0, 700, n), unit="D")
    level = r.integers(0, 300, n)
    word = r.choice(["flock", "single"], n)
    frame = pd.DataFrame({
        "when": days.strftime("%Y-%m-%d").where(r.random(n) > 0.05, None),
        "shop": [f"shop{v}" for v in level],
        "remarks": [f"saw a {w} near gate {g} today" for w, g in zip(word, r.integers(0, 9, n))],
        "ref": [f"R{i:07d}" for i in range(n)],
        "site": "main",
        "x": r.normal(size=n)})
    frame["x_again"] = frame["x"]
    y = np.exp(3 + 0.3 * np.sin(days.month.to_numpy()) + 0.002 * level + 0.4 * (word == "flock") + 0.1 * frame.x)
    tables = Tables(frame.iloc[:500].reset_index(drop=True), frame.iloc[500:].reset_index(drop=True),
                    pd.Series(y[:500]), pd.Series(np.arange(500, n)), TableSpec("id", "y", "regression", "rmsle"),
                    "train.csv", "test.csv")
    return tables


def test_each_role_becomes_its_features():
    features = build_features(messy(), FeatureParams(max_levels=16, min_count=3))
    table = {row["column"]: row for row in features.columns}
    assert {c: table[c]["role"] for c in table} == {
        "when": "date", "shop": "category", "remarks": "text", "ref": "id", "site": "constant", "x": "number",
        "x_again": "duplicate"}
    names = features.names
    assert {"when.year", "when.month", "when.day", "when.weekday", "when.dayofyear", "when.epoch", "when.missing"} \
        <= set(names) and "when.hour" not in names  # no times in this date
    assert sum(n.startswith("shop_") for n in names) == 17 + 1  # 16 levels, rare, missing
    assert "shop.count" in names and {"remarks.chars", "remarks.words"} <= set(names)
    assert not any(n.startswith(("ref", "site", "x_again")) for n in names)  # dropped
    assert features.X.shape[1] == len(names) < 60  # never a column per distinct string
    assert features.codes.shape == (500, 1) and len(features.texts) == 1 and features.texts[0].shape[0] == 500
    assert table["shop"]["features"] == 19 and table["ref"]["features"] == 0
    assert "in-fold target encoding" in table["shop"]["note"] and "in-fold text model" in table["remarks"]["note"]
