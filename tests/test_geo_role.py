"""The geo role (issue 30): a latitude and a longitude declared as one entry become rotated
coordinates, the distance to the rows' centre and a missing indicator; a label that follows the
distance to a place is then learned better than from the two numbers alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import declare, run_cli
from pipeline.errors import ConfigError, DataError
from pipeline.tabular.columns import column_roles
from pipeline.tabular.features import FeatureParams, build_features
from pipeline.tabular.tables import Tables, TableSpec
from test_members import _one_thread  # noqa: F401  (autouse: OpenMP on one thread in this module too)

GEO = {"geo": [["lat", "lon"]]}


def places(rows: int = 3000, seed: int = 0, missing: float = 0.02) -> pd.DataFrame:
    """Homes around a city centre at (40.75, -73.95): the price falls with the distance to it,
    a ring that no single coordinate tells; ``missing``: the share of latitudes missing."""
    r = np.random.default_rng(seed)
    n = rows + rows // 3
    frame = pd.DataFrame({"key": np.arange(n), "lat": 40.75 + r.uniform(-0.3, 0.3, n),
                          "rooms": r.integers(1, 6, n), "lon": -73.95 + r.uniform(-0.3, 0.3, n)})
    km = 111.2 * np.hypot(frame.lat - 40.75, (frame.lon + 73.95) * np.cos(np.radians(40.75)))
    frame["price"] = np.exp(12 - km / 15 + 0.1 * frame.rooms + r.normal(0, 0.05, n)).round(2)
    frame.loc[r.random(n) < missing, "lat"] = np.nan
    return frame


def tables(frame: pd.DataFrame, columns: dict, rows: int) -> Tables:
    features = frame.drop(columns=["key", "price"])
    return Tables(features.iloc[:rows], features.iloc[rows:].reset_index(drop=True), frame.price.iloc[:rows],
                  frame.key.iloc[rows:], TableSpec("key", "price", "regression", "rmsle", columns=columns),
                  Path("train.csv"), Path("test.csv"))


def competition(root: Path, frame: pd.DataFrame, rows: int, columns: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    frame.iloc[:rows].to_csv(root / "train.csv", index=False)
    frame.iloc[rows:].drop(columns=["price"]).to_csv(root / "test.csv", index=False)
    (root / "pipeline.toml").write_text(declare("t", train="train.csv", test="test.csv", id="key", label="price",
                                                task="regression", metric="rmsle") + columns)
    (root / "params.toml").write_text("[t]\nfolds = 4\n")
    return root


def test_a_declared_geo_entry_becomes_its_features_exactly():
    """Four points symmetric about (0, 0), whose centre that is: each one is 157.2 km from it
    (the spherical law of cosines, not the haversine the role uses), and the rotations are the
    coordinates turned by each angle."""
    frame = pd.DataFrame({"lat": [1.0, -1.0, 1.0, -1.0, np.nan], "lon": [1.0, 1.0, -1.0, -1.0, 3.0],
                          "key": range(5), "price": 1.0})
    features = build_features(tables(frame, GEO, 4), FeatureParams(fit_on="train"))
    native = dict(zip(features.native_names, features.native.numpy().T))
    expected = 6371.0 * np.arccos(np.cos(np.radians(1.0)) ** 2)
    np.testing.assert_allclose(native["lat+lon.km"], expected, rtol=1e-6)
    lat, lon = frame.lat[:4], frame.lon[:4]
    for angle in (0, 15, 30, 45, 60, 75):
        cos, sin = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        np.testing.assert_allclose(native[f"lat+lon.rot{angle}a"], lat * cos + lon * sin, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(native[f"lat+lon.rot{angle}b"], -lat * sin + lon * cos, rtol=1e-6, atol=1e-6)
    assert "lat+lon.missing" not in native  # the rows it is fit on have both coordinates
    test = dict(zip(features.native_names, features.native_test.numpy().T))
    assert np.isnan(test["lat+lon.km"][0]) and np.isfinite(features.X_test.numpy()).all()


def test_geo_features_replace_the_coordinates_and_the_columns_table_shows_both(tmp_path, capsys):
    frame = places(600)
    features = build_features(tables(frame, GEO, 600), FeatureParams())
    assert {"lat+lon.km", "lat+lon.rot45a", "lat+lon.rot45b", "lat+lon.missing"} <= set(features.names)
    assert not {"lat", "lon"} & set(features.native_names)  # not also used alone
    ws = competition(tmp_path / "ws", frame, 600, 'columns = {geo = [["lat", "lon"]]}\n')
    code, out, err = run_cli(ws, capsys, "columns", "t", "--json")
    assert code == 0, err
    rows = {row["column"]: row for row in json.loads(out)}
    assert list(rows) == ["lat", "lon", "rooms"]  # every column, a role's together
    assert rows["lat"]["role"] == rows["lon"]["role"] == "geo (declared)"
    assert rows["lat"]["features"] >= 14 and rows["lon"]["features"] == 0 and "lat+lon" in rows["lon"]["note"]


def test_the_distance_to_a_place_scores_better_as_geo_than_as_two_numbers(tmp_path, capsys):
    """A linear model cannot draw a ring from two coordinates at all (RMSLE 0.57; 0.050 with
    geo, the noise being 0.05); trees can, in steps, and the distance still helps them a little."""
    frame = places(missing=0.0)
    scores = {}
    for name, columns in (("numbers", ""), ("geo", 'columns = {geo = [["lat", "lon"]]}\n')):
        ws = competition(tmp_path / name, frame, 3000, columns)
        for model in ("ridge", "lightgbm"):
            code, out, err = run_cli(ws, capsys, "cv", "t", "--json", "--model", model)
            assert code == 0, err
            scores[name, model] = json.loads(out)["mean_valid"]
    assert scores["geo", "ridge"] < 0.2 * scores["numbers", "ridge"], scores
    assert scores["geo", "lightgbm"] < scores["numbers", "lightgbm"], scores  # 0.0564 against 0.0572


def test_a_bad_geo_declaration_is_one_line():
    frame = places(100).drop(columns=["key", "price"])
    sydney = pd.DataFrame({"lat": [-33.9, -33.8], "lon": [151.2, 151.3]})
    with pytest.raises(DataError, match="column 'lon' holds 151.2, which is no latitude"):
        column_roles(sydney, sydney.iloc[:0], {"geo": [["lon", "lat"]]})  # swapped
    for declared, needle, error in [
        ({"geo": ["lat"]}, "columns.geo: 'lat' names 1 column(s); geo takes 2", ConfigError),
        ({"geo": [["lat", "lon"]], "number": ["lon"]}, "column 'lon' is declared both geo and number", ConfigError),
        ({"geo": [["lat", "nope"]]}, "no column 'nope'", ConfigError),
    ]:
        with pytest.raises(error) as caught:
            column_roles(frame, frame.iloc[:0], declared, where="pipeline.toml [target.t]")
        assert needle in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
