"""Column roles (issue 23): inferred from the values of train and test together, declared where
the guess is wrong, and turned into features by role: dates into their parts, text into its
statistics and an in-fold text model, categories of any cardinality, ids and constants dropped."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.errors import ConfigError, DataError
from pipeline.tabular.columns import column_roles, infer
from pipeline.tabular.roles import ROLES, Role, register
from pipeline.tabular.roles.base import as_numbers
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
    assert column.role == "number" and column.note == "5 test values are not numbers ('unknown'); read as missing"
    assert column.read(test).isna().sum() == 5


def _amounts(test_amounts: list) -> Tables:
    """A regression on ``amount``, whose train cells are all numbers."""
    r = np.random.default_rng(0)
    amount = r.normal(size=N)
    train = pd.DataFrame({"amount": amount, "size": r.choice(["S", "M", "L"], N)})
    test = pd.DataFrame({"amount": test_amounts, "size": r.choice(["S", "M", "L"], len(test_amounts))})
    return Tables(train, test, pd.Series(2 * amount), pd.Series(range(len(test))),
                  TableSpec("id", "y", metric="rmse"), Path("train.csv"), Path("test.csv"))


def test_a_few_stray_strings_in_a_numeric_column_are_read_as_missing_with_a_warning(caplog):
    """Issue 25: five 'unknown' test cells once turned the column into one one-hot per value."""
    amounts = [f"{v:.3f}" for v in np.random.default_rng(1).normal(size=N)]
    amounts[:5] = ["unknown"] * 5
    features = build_features(_amounts(amounts), FeatureParams(numeric_bins=0))
    assert [n for n in features.names if n.startswith("amount")] == ["amount"]
    assert "amount: 5 test values are not numbers ('unknown'); read as missing" in caplog.text


def test_a_numeric_column_with_many_strings_stays_text_and_says_how_to_read_it_as_numbers(caplog, tmp_path):
    """Over 5% of the cells not numbers: kept as text, with a warning whose advice works."""
    amounts = [f"{v:.1f} kg" for v in np.random.default_rng(1).normal(size=N // 4)]
    tables = _amounts(amounts)
    assert build_features(tables, FeatureParams()).names != ["amount"]
    assert f"amount: {N // 4} test values are not numbers ('" in caplog.text
    assert "kept as text (over 5% of the cells): declare columns.number" in caplog.text
    declared = Tables(**{**tables.__dict__, "spec": TableSpec("id", "y", metric="rmse", columns={"number": ["amount"]})})
    features = build_features(declared, FeatureParams(numeric_bins=0))
    assert [n for n in features.names if n.startswith("amount")] == ["amount"]
    assert torch.isfinite(features.X_test).all()


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
    assert sum(row["features"] for row in features.columns) == len(names)  # each feature is one column's


def test_text_words_mark_the_most_frequent_words_within_the_cell_budget(monkeypatch):
    """``text_words``: a free text's most frequent words (one character ones too: "2 GULLS") as
    0/1 columns that mark exactly the texts holding them; off by default; fewer words when rows x
    words would pass WORD_CELLS; kept with the fitted terms, and absent from terms saved before."""
    tables = messy()
    plain = build_features(tables, FeatureParams(max_levels=16, min_count=3))
    assert not any(n.startswith("remarks:") for n in plain.names)
    features = build_features(tables, FeatureParams(max_levels=16, min_count=3, text_words=40))
    words = [n for n in features.native_names if n.startswith("remarks:")]
    assert {"remarks:flock", "remarks:single", "remarks:a", "remarks:3"} <= set(words) and len(words) <= 40
    remarks = tables.train["remarks"]
    for word in ("flock", "3"):
        marked = features.native[:, features.native_names.index(f"remarks:{word}")].numpy()
        assert (marked == remarks.str.split().map(lambda ws: word in ws)).all()
    table = {row["column"]: row for row in features.columns}
    assert f"its {len(words)} most frequent words as 0/1 columns" in table["remarks"]["note"]
    import pipeline.tabular.roles.text as text_role
    monkeypatch.setattr(text_role, "WORD_CELLS", 3 * len(tables.train) + 3 * len(tables.test))
    few = build_features(tables, FeatureParams(max_levels=16, min_count=3, text_words=40))
    assert sum(n.startswith("remarks:") for n in few.native_names) == 3
    terms = few.builder.derived.fitted["remarks"]
    restored = pickle.loads(pickle.dumps(terms))
    assert restored.words == terms.words and len(terms.words) == 3
    clash = messy()
    clash.train["remarks.chars"], clash.test["remarks.chars"] = np.arange(500.0) % 7, np.arange(100.0) % 7
    with pytest.raises(DataError, match=r"two features get the same name \('remarks.chars'\); rename the column"):
        build_features(clash, FeatureParams(max_levels=16, min_count=3))
    before = object.__new__(type(terms))
    before.__setstate__({"parts": terms.parts})  # saved before text_words
    assert before.words == [] and before.indicators(remarks).shape == (500, 0)


def test_test_dates_after_the_train_dates_are_warned_about_with_the_split_that_fits(caplog):
    """Issue 25: shuffled folds gave CV RMSE 1.27 on such a table, the test 7.08, without a word."""
    train = pd.DataFrame({"day": pd.date_range("2020-01-01", periods=N).strftime("%Y-%m-%d"), "x": np.arange(N)})
    test = pd.DataFrame({"day": pd.date_range("2021-03-01", periods=50).strftime("%Y-%m-%d"), "x": np.arange(50)})
    [day, _] = column_roles(train, test)
    assert day.role == "date" and "100% of test dates (2021-03-01 to 2021-04-19) come after train's" in day.note
    assert 'declare time = "day" and split = "time"' in day.note and day.note.split("; ", 1)[1] in caplog.text
    caplog.clear()
    [day, _] = column_roles(train, test, time="day")  # already the time key: nothing to suggest
    assert day.note == "format %Y-%m-%d" and not caplog.text
    overlapping = pd.DataFrame({"day": train["day"].iloc[::8].to_numpy(), "x": np.arange(50)})
    assert next(iter(column_roles(train, overlapping))).note == "format %Y-%m-%d"


@pytest.fixture
def pair_role():
    """A role over two columns, registered for one test: their sum and difference."""

    @register
    class Pair(Role):
        name = "pair"
        takes = 2

        def read(self, values, column):
            return as_numbers(values)

        def names(self, column, fitted):
            return [f"{column.name}.sum", f"{column.name}.diff"]

        def frames(self, column, fitted, values):
            a, b = (values[name] for name in column.sources)
            return {f"{column.name}.sum": a + b, f"{column.name}.diff": a - b}, {}

    yield Pair
    del ROLES["pair"]


def test_a_role_over_several_columns_is_one_entry_whose_columns_are_not_used_alone(pair_role):
    """Issue 30: ``columns = {pair = [["a", "b"]]}``: one entry, a+b, at its first column's place,
    with the features the role derives from both; the columns table still shows every column."""
    r = np.random.default_rng(0)
    frame = pd.DataFrame({"b": r.normal(size=N), "c": r.normal(size=N), "a": r.normal(size=N)})
    tables = Tables(frame.iloc[:300], frame.iloc[300:].reset_index(drop=True), pd.Series(r.normal(size=300)),
                    pd.Series(range(N - 300)), TableSpec("id", "y", metric="rmse", columns={"pair": [["a", "b"]]}),
                    Path("train.csv"), Path("test.csv"))
    features = build_features(tables, FeatureParams(numeric_bins=0))
    assert features.names == ["a+b.sum", "a+b.diff", "c"]
    native = features.native.numpy()
    np.testing.assert_allclose(native[:, 0], (frame.a + frame.b)[:300], rtol=1e-5)
    rows = [(row["column"], row["role"], row["features"]) for row in features.columns]
    assert rows == [("a", "pair (declared)", 2), ("b", "pair (declared)", 0), ("c", "number", 1)]
    for declared, needle in [
        ({"pair": ["a"]}, "columns.pair: 'a' names 1 column(s); pair takes 2"),
        ({"pair": [["a", "b", "c"]]}, "pair takes 2"),
        ({"pair": [["a", "b"]], "drop": ["b"]}, "column 'b' is declared both pair and drop"),
    ]:
        with pytest.raises(ConfigError) as caught:
            column_roles(frame, frame.iloc[:0], declared, where="pipeline.toml [target.t]")
        assert needle in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
