"""Tabular features: d2l's preprocessing of the real house CSVs, and its rules on small generated frames."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.errors import DataError
from pipeline.errors import ParamError
from pipeline.tabular.encoders import MISSING
from pipeline.tabular.features import FeatureParams, Features, build_features
from pipeline.tabular.tables import TableSpec, load_tables

HOUSE = TableSpec(id="Id", label="SalePrice", task="regression", metric="log_rmse")


def d2l(**params) -> FeatureParams:
    """d2l 4.10's preprocessing (what these tests pin): numbers by dtype, every level one-hot."""
    return FeatureParams(roles=False, max_levels=0, min_count=1, **params)


# ----------------------------------------------------------------------------- the real house data


@pytest.fixture(scope="module")
def house_tables(shared_datasets):
    return load_tables(shared_datasets / "kaggle_house_pred_train.csv",
                       shared_datasets / "kaggle_house_pred_test.csv", HOUSE)


@pytest.fixture(scope="module")
def house(house_tables) -> Features:
    return build_features(house_tables, d2l())


@pytest.fixture(scope="module")
def house_on_train(house_tables) -> Features:
    return build_features(house_tables, d2l(fit_on="train"))


@pytest.fixture(scope="module")
def house_raw(house_tables) -> pd.DataFrame:
    """Train then test feature rows, as read (d2l's ``all_features``)."""
    return pd.concat([house_tables.train, house_tables.test], ignore_index=True)


def numeric_columns(tables) -> list[str]:
    return [c for c in tables.train.columns if pd.api.types.is_numeric_dtype(tables.train[c])]


def categorical_columns(tables) -> list[str]:
    return [c for c in tables.train.columns if not pd.api.types.is_numeric_dtype(tables.train[c])]


def both(features: Features) -> np.ndarray:
    return torch.cat([features.X, features.X_test]).numpy()


def test_house_shapes_are_330_features(house):
    """d2l's book prints 331 columns for the house features because its preprocessed frame still
    holds the SalePrice label column next to the features: 330 features + 1 label. The features
    alone are 36 standardized numeric columns and 294 one-hot columns (43 categoricals, each with
    a missing-value column, as ``get_dummies(dummy_na=True)``)."""
    assert house.X.shape == (1460, 330)
    assert house.X_test.shape == (1459, 330)
    assert house.X.dtype == house.X_test.dtype == torch.float32
    assert house.y.dtype == torch.float32 and house.y.shape == (1460,)
    assert not house.X.isnan().any() and not house.X_test.isnan().any()
    assert torch.isfinite(house.X).all() and torch.isfinite(house.X_test).all()
    assert len(house.names) == len(set(house.names)) == 330
    assert house.test_ids == list(range(1461, 2920))
    assert house.y[:3].tolist() == [208500.0, 181500.0, 223500.0]


def test_house_matches_d2l_get_dummies(house, house_tables, house_raw):
    """The same features as d2l's pandas recipe: standardize, fillna(0), get_dummies(dummy_na=True).

    d2l divides by pandas' std (ddof=1) where StandardScaler uses ddof=0, a factor sqrt(m/(m-1))."""
    numeric = numeric_columns(house_tables)
    reference = house_raw.copy()
    reference[numeric] = reference[numeric].apply(lambda x: (x - x.mean()) / x.std()).fillna(0)
    reference = pd.get_dummies(reference, dummy_na=True, dtype=np.float32)
    reference.columns = [c.removesuffix("_nan") + f"_{MISSING}" if c.endswith("_nan") else c
                         for c in reference.columns]
    assert sorted(reference.columns) == sorted(house.names)
    ours = pd.DataFrame(both(house), columns=house.names)
    for c in numeric:
        m = house_raw[c].notna().sum()
        np.testing.assert_allclose(ours[c], reference[c] * math.sqrt(m / (m - 1)), atol=2e-5, err_msg=c)
    one_hot = [n for n in house.names if n not in numeric]
    np.testing.assert_array_equal(ours[one_hot].to_numpy(), reference[one_hot].to_numpy())


def test_house_numeric_columns_are_standardized_over_train_and_test(house, house_tables, house_raw):
    numeric = numeric_columns(house_tables)
    assert len(numeric) == 36
    values = both(house)
    for c in numeric:
        column = values[:, house.names.index(c)].astype(np.float64)
        present = house_raw[c].notna().to_numpy()
        assert abs(column[present].mean()) < 1e-5, c
        assert column[present].std() == pytest.approx(1.0, abs=1e-4), c
        assert (column[~present] == 0).all(), f"{c}: missing values are filled with the mean, 0"
    assert house_raw["LotFrontage"].isna().sum() > 400  # so the fill above is exercised


def test_house_has_a_missing_indicator_per_categorical(house, house_tables, house_raw):
    categorical = categorical_columns(house_tables)
    assert len(categorical) == 43
    values = both(house)
    for c in categorical:
        name = f"{c}_{MISSING}"
        assert name in house.names
        indicator = values[:, house.names.index(name)]
        np.testing.assert_array_equal(indicator, house_raw[c].isna().to_numpy(dtype=np.float32), err_msg=c)
        block = [i for i, n in enumerate(house.names) if n.startswith(f"{c}_")]
        np.testing.assert_array_equal(values[:, block].sum(axis=1), 1.0, err_msg=c)
    # MSZoning is missing in 4 test rows and no training row: the column exists all the same.
    msz = house.names.index(f"MSZoning_{MISSING}")
    assert house.X[:, msz].sum() == 0 and house.X_test[:, msz].sum() == 4


def test_house_fit_on_train_uses_training_statistics(house, house_on_train, house_tables):
    on_train = house_on_train
    assert on_train.names == house.names
    assert on_train.X.shape == house.X.shape and on_train.X_test.shape == house.X_test.shape
    for c in numeric_columns(house_tables):
        j = house.names.index(c)
        present = house_tables.train[c].notna().to_numpy()
        column = on_train.X[:, j].double().numpy()[present]
        assert abs(column.mean()) < 1e-5 and column.std() == pytest.approx(1.0, abs=1e-4), c
    lot = house.names.index("LotArea")
    assert not torch.allclose(on_train.X[:, lot], house.X[:, lot])
    assert not torch.allclose(on_train.X_test[:, lot], house.X_test[:, lot])
    # one-hot columns do not depend on where the scaler was fitted (no test-only category here)
    one_hot = [i for i, n in enumerate(house.names) if n not in numeric_columns(house_tables)]
    assert torch.equal(on_train.X[:, one_hot], house.X[:, one_hot])


def test_house_log_skewed_changes_skewed_columns_only(house, house_tables, house_raw):
    logged = build_features(house_tables, d2l(log_skewed=0.75))
    numeric = numeric_columns(house_tables)
    skew = house_raw[numeric].skew()
    skewed = [c for c in numeric if abs(skew[c]) > 0.75 and house_raw[c].min() >= 0]
    assert "LotArea" in skewed and "OverallQual" not in skewed
    assert 0 < len(skewed) < len(numeric)
    assert logged.names == house.names
    values, before = both(logged), both(house)
    for j, name in enumerate(house.names):
        if name in skewed:
            assert not np.allclose(values[:, j], before[:, j]), name
            raw = np.log1p(house_raw[name])
            expected = ((raw - raw.mean()) / raw.std(ddof=0)).fillna(0)
            np.testing.assert_allclose(values[:, j], expected, atol=2e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(values[:, j], before[:, j], err_msg=name)


def test_house_category_only_in_test_maps_to_zeros(house_tables, house_on_train):
    test = house_tables.test.copy()
    test.loc[test.index[0], "MSZoning"] = "Atlantis"
    changed = dataclasses.replace(house_tables, test=test)
    plain = house_on_train
    features = build_features(changed, d2l(fit_on="train"))
    assert features.names == plain.names and "MSZoning_Atlantis" not in features.names
    block = [i for i, n in enumerate(features.names) if n.startswith("MSZoning_")]
    assert plain.X_test[0, block].sum() == 1
    assert features.X_test[0, block].tolist() == [0.0] * len(block)
    others = [i for i in range(len(features.names)) if i not in block]
    assert torch.equal(features.X_test[0, others], plain.X_test[0, others])
    assert torch.equal(features.X_test[1:], plain.X_test[1:]) and torch.equal(features.X, plain.X)
    # fit on train+test, the category is learned like any other
    learned = build_features(changed, d2l(fit_on="all"))
    assert learned.X_test[0, learned.names.index("MSZoning_Atlantis")] == 1


# ----------------------------------------------------------------------------- small generated frames


def tables_from(tmp_path, train: str, test: str, spec: TableSpec = TableSpec("Id", "y", "regression", "rmse")):
    (tmp_path / "train.csv").write_text(train, encoding="utf-8")
    (tmp_path / "test.csv").write_text(test, encoding="utf-8")
    return load_tables(tmp_path / "train.csv", tmp_path / "test.csv", spec)


def test_numeric_nan_is_filled_with_the_mean_after_standardizing(tmp_path):
    tables = tables_from(tmp_path, "Id,a,y\n1,1,10\n2,,20\n3,3,30\n", "Id,a\n4,8\n5,\n")
    features = build_features(tables, d2l())
    a = torch.cat([features.X, features.X_test])[:, 0].double()
    present = [0, 2, 3]
    mean, std = np.mean([1, 3, 8]), np.std([1, 3, 8])
    assert a[present].tolist() == pytest.approx([(v - mean) / std for v in (1, 3, 8)], abs=1e-6)
    assert a[1] == 0 and a[4] == 0, "missing -> 0, the standardized mean"
    assert a[present].mean() == pytest.approx(0, abs=1e-6)


def test_categorical_nan_goes_to_the_missing_column(tmp_path):
    tables = tables_from(tmp_path, "Id,c,y\n1,x,1\n2,,2\n3,y,3\n", "Id,c\n4,y\n5,\n")
    features = build_features(tables, d2l())
    assert features.names == ["c_x", "c_y", f"c_{MISSING}"]
    assert features.X.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert features.X_test.tolist() == [[0, 1, 0], [0, 0, 1]]


def test_missing_column_exists_even_without_missing_values(tmp_path):
    features = build_features(tables_from(tmp_path, "Id,c,y\n1,x,1\n2,y,2\n", "Id,c\n3,x\n"), d2l())
    assert features.names == ["c_x", "c_y", f"c_{MISSING}"]
    assert features.X[:, 2].tolist() == [0, 0]


def test_classification_labels_become_sorted_class_indices(tmp_path):
    spec = TableSpec("Id", "animal", "classification", "accuracy")
    tables = tables_from(tmp_path, "Id,a,animal\n1,1,dog\n2,2,cat\n3,3,emu\n4,4,cat\n", "Id,a\n5,1\n", spec)
    features = build_features(tables, d2l())
    assert features.classes == ["cat", "dog", "emu"]
    assert features.y.dtype == torch.int64 and features.y.tolist() == [1, 0, 2, 0]


def test_integer_class_labels_stay_plain_integers(tmp_path):
    spec = TableSpec("Id", "k", "classification", "accuracy")
    features = build_features(tables_from(tmp_path, "Id,a,k\n1,1,7\n2,2,3\n3,3,7\n", "Id,a\n4,1\n", spec), d2l())
    assert features.classes == [3, 7] and all(type(c) is int for c in features.classes)
    assert features.y.tolist() == [1, 0, 1]


def test_features_survive_a_weights_only_round_trip(tmp_path):
    spec = TableSpec("Id", "animal", "classification", "accuracy")
    features = build_features(tables_from(tmp_path, "Id,a,c,animal\n1,1,x,dog\n2,,y,cat\n", "Id,a,c\n3,2,\n", spec), d2l())
    torch.save(features.to_state(), tmp_path / "features.pt")
    again = Features.from_state(torch.load(tmp_path / "features.pt", weights_only=True))
    assert torch.equal(again.X, features.X) and torch.equal(again.X_test, features.X_test)
    assert (again.names, again.classes, again.test_ids, again.spec) == (
        features.names, features.classes, features.test_ids, features.spec)


def test_infinite_feature_is_treated_as_missing_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="pipeline.tabular"):
        tables = tables_from(tmp_path, "Id,a,b,y\n1,inf,1,1\n2,2,2,2\n3,4,-inf,3\n", "Id,a,b\n4,-inf,1\n")
    assert "train.csv: treating 2 infinite value(s) in a, b as missing" in caplog.text
    assert "test.csv: treating 1 infinite value(s) in a as missing" in caplog.text
    assert tables.train["a"].isna().tolist() == [True, False, False]
    features = build_features(tables, d2l())
    assert torch.isfinite(features.X).all() and torch.isfinite(features.X_test).all()
    assert features.X[0, 0] == 0 and features.X_test[0, 0] == 0


def test_values_too_large_for_float32_are_a_one_line_error(tmp_path):
    tables = tables_from(tmp_path, "Id,a,b,y\n1,1,1,1\n2,1,2,2\n", "Id,a,b\n3,1e39,1\n")
    with pytest.raises(DataError, match=r"test\.csv: column 'a' has values too large") as caught:
        build_features(tables, d2l(fit_on="train"))
    assert "\n" not in str(caught.value)
    tables = tables_from(tmp_path, "Id,a,b,y\n1,1e308,1,1\n2,1.5e308,2,2\n", "Id,a,b\n3,1,1\n")
    with pytest.raises(DataError, match=r"column 'a' has values too large"):
        build_features(tables, d2l())


def test_feature_name_clash_is_a_one_line_error(tmp_path):
    tables = tables_from(tmp_path, "Id,c,c_x,y\n1,x,1,1\n2,y,2,2\n", "Id,c,c_x\n3,x,1\n")
    with pytest.raises(DataError, match=r"two features get the same name \(\['c_x'\]\); rename the column"):
        build_features(tables, d2l())


def test_log_skewed_bool_column_keeps_float_precision(tmp_path):
    tables = tables_from(tmp_path, "Id,flag,y\n1,True,1\n2,False,2\n3,True,3\n", "Id,flag\n4,True\n")
    features = build_features(tables, d2l(log_skewed=0.1))
    expected = np.log1p(np.array([1, 0, 1, 1], dtype=np.float64))
    expected = (expected - expected.mean()) / expected.std()
    np.testing.assert_allclose(torch.cat([features.X, features.X_test])[:, 0], expected, rtol=1e-6)


@pytest.mark.parametrize("fit_on", ["all", "train"])
def test_column_without_training_values_is_dropped(tmp_path, caplog, fit_on):
    with caplog.at_level(logging.WARNING, logger="pipeline.tabular"):
        tables = tables_from(tmp_path, "Id,a,b,y\n1,,1,1\n2,,2,2\n", "Id,a,b\n3,5,1\n")
    assert "dropping a: no values in train.csv" in caplog.text
    features = build_features(tables, d2l(fit_on=fit_on))
    assert features.names == ["b"]


def test_bad_fit_on_is_a_param_error():
    with pytest.raises(ParamError, match="fit_on = 'test': not one of all, train"):
        d2l(fit_on="test")
