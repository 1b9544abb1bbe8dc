"""A trained tabular model is a model (issue 22): it predicts rows it has not seen, as the same
recipe fit in memory does; and each member family owns its params, so `--model lightgbm` works
and a report lists only the params each member uses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import assert_one_line_error, make_competition, run_cli
from pipeline import checkpoints
from pipeline.api import Pipeline
from pipeline.tabular.cv import AUTO_SEEDS
from pipeline.tabular.features import build_features
from pipeline.tabular.model import fit_final
from pipeline.tabular.tables import load_tables
from test_members import _one_thread  # noqa: F401  (autouse: OpenMP on one thread in this module too)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The toy competition (log_rmse) after `pipeline submit toy` with the auto recipe, and a
    second test file: the training rows' features (without the label) and half the test rows, shuffled."""
    ws = make_competition(tmp_path_factory.mktemp("trained"))
    (ws / "params.toml").write_text("[toy]\nfolds = 3\nepochs = 4\n")
    code = Pipeline(ws).submit("toy")
    assert code["rows"] == 120
    train, test = pd.read_csv(ws / "train.csv"), pd.read_csv(ws / "test.csv")
    other = pd.concat([train.drop(columns=["price"]), test.iloc[::2]]).sample(frac=1.0, random_state=3)
    other[["zone", "age", "rooms", "area", "key"]].to_csv(ws / "other.csv", index=False)  # other column order
    return ws, other


def test_a_trained_model_predicts_another_test_file_without_training(trained, capsys):
    ws, other = trained
    code, out, err = run_cli(ws, capsys, "submit", "toy", "--test", str(ws / "other.csv"), "--out",
                             str(ws / "other-sub.csv"))
    assert code == 0, err
    assert "train: up to date, skipped" in err and "running" not in err  # nothing was trained again
    written = pd.read_csv(ws / "other-sub.csv")
    assert list(written.columns) == ["key", "price"] and written["key"].tolist() == other["key"].tolist()
    # the rows both test files hold get the same predictions as the competition's submission
    first = pd.read_csv(ws / "submissions" / "toy.csv").set_index("key")["price"]
    shared = written[written["key"].isin(first.index)]
    assert len(shared) == 60
    np.testing.assert_allclose(shared["price"], first.loc[shared["key"]].to_numpy(), rtol=1e-6)


def test_the_saved_model_predicts_as_the_same_recipe_fit_in_memory(trained, capsys):
    ws, other = trained
    code, _, err = run_cli(ws, capsys, "submit", "toy", "--test", str(ws / "other.csv"), "--out",
                           str(ws / "again.csv"))
    assert code == 0, err
    ctx = Pipeline(ws).context("toy")
    tables = load_tables(ws / "train.csv", ws / "test.csv", ctx.target.spec)
    features = build_features(tables, ctx.config.features)
    oof = torch.load(ws / "data" / "toy" / "oof.pt", weights_only=True)
    members = [ctx.config.members[i] for i in oof["kept"]]
    model, _ = fit_final(features, ctx.config, members, list(oof["weights"]), list(oof["budgets"]), device=CPU)
    expected = model.predict(model.inputs(other.drop(columns=["key"]), "other.csv", CPU))[:, 0]
    np.testing.assert_allclose(pd.read_csv(ws / "again.csv")["price"], expected, rtol=1e-5)
    assert not np.allclose(expected, expected.mean(), rtol=1e-3)  # the control: the rows really differ


def test_a_test_file_without_the_models_columns_is_one_line(trained, capsys):
    ws, other = trained
    other.drop(columns=["area"]).to_csv(ws / "broken.csv", index=False)
    code, _, err = run_cli(ws, capsys, "submit", "toy", "--test", str(ws / "broken.csv"))
    assert_one_line_error(code, err, "broken.csv lacks the column(s) area")
    assert code == 1


def report_of(ws, capsys, *flags) -> dict:
    code, out, err = run_cli(ws, capsys, "cv", "toy", "--json", *flags)
    assert code == 0, err
    return json.loads(out)


def test_model_lightgbm_is_one_member_with_its_own_params(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text("[toy]\nfolds = 3\n")
    report = report_of(ws, capsys, "--model", "lightgbm")
    assert [m["model"] for m in report["members"]] == ["lightgbm"]
    params = report["params"]
    assert params["model"] == "lightgbm" and params["learning_rate"] == 0.03 and params["num_leaves"] == 15
    assert not {"lr", "hidden", "dropout", "epochs", "batch_size", "ensemble"} & set(params)
    assert np.isfinite(report["mean_valid"])


def test_a_reports_params_are_those_each_member_uses(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text("[toy]\nfolds = 3\nepochs = 3\n")
    params = report_of(ws, capsys)["params"]
    mlp, trees, glm = params["ensemble"]
    assert mlp["model"] == "mlp" and {"hidden", "dropout", "lr", "epochs", "log_target"} <= set(mlp)
    assert "label_smoothing" not in mlp  # a classifier's param, on a regression target
    assert trees["model"] == "lightgbm" and "learning_rate" in trees and not {"lr", "hidden", "epochs"} & set(trees)
    assert glm == {"model": "glm", "log_target": "auto"}
    assert params["recipe"] == "auto" and params["numeric_bins"] == "auto" and params["folds"] == 3
    assert "lr" not in params and "hidden" not in params  # no base params that no member reads


def test_a_flag_that_no_member_uses_is_refused_before_any_work(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    code, out, err = run_cli(ws, capsys, "cv", "toy", "--model", "lightgbm", "--hidden", "64")
    assert_one_line_error(code, err, "--hidden [64]", "no member of this recipe (lightgbm) uses it")
    assert code == 2 and not (ws / "data").exists()


def test_final_folds_submits_the_cv_fold_models_without_fitting_again(tmp_path, capsys):
    """final = "folds" (AutoGluon's bagging): the model is the CV's fold models of every round of seeds,
    each reading its own fold's in-fold columns (here a street of 100 levels' target encoding), so
    train fits nothing; its predictions of a second test file are the submission's, and it is a
    model of the same rows as the refit one: close to it, not it. With a stack it is refused."""
    ws = make_competition(tmp_path / "ws")
    for name in ("train.csv", "test.csv"):
        frame = pd.read_csv(ws / name)
        frame["street"] = [f"street {k % 100}" for k in frame["key"]]
        frame.to_csv(ws / name, index=False)
    (ws / "params.toml").write_text('[toy]\nfolds = 3\nseeds = "auto"\nblend = "mean"\n'
                                    'ensemble = [{model = "lightgbm"}, {model = "glm"}]\n')
    code, _, err = run_cli(ws, capsys, "submit", "toy", "--final", "folds", "--time-limit", "10m")
    assert code == 0, err
    saved = torch.load(ws / "models" / "toy.pt", weights_only=True)
    trees, _ = saved["members"]
    assert len(trees["rounds"]) == AUTO_SEEDS and len(trees["rounds"][0]["models"]) == 3  # each round: 3 folds
    assert len(checkpoints.unpack(saved["encoders"]["groups"])) == 3
    bagged = pd.read_csv(ws / "submissions" / "toy.csv").set_index("key")["price"]
    other = pd.read_csv(ws / "test.csv").iloc[::3]
    other.to_csv(ws / "other.csv", index=False)
    code, _, err = run_cli(ws, capsys, "submit", "toy", "--final", "folds", "--time-limit", "10m", "--test",
                           str(ws / "other.csv"),
                           "--out", str(ws / "other-sub.csv"))
    assert code == 0 and "running" not in err, err
    np.testing.assert_allclose(pd.read_csv(ws / "other-sub.csv")["price"], bagged.loc[other["key"]], rtol=1e-6)
    assert run_cli(ws, capsys, "submit", "toy")[0] == 0
    refit = pd.read_csv(ws / "submissions" / "toy.csv").set_index("key")["price"]
    gap = np.abs(np.log(bagged / refit))
    assert gap.mean() < 0.05 and gap.max() > 1e-4
    (ws / "params.toml").write_text('[toy]\nfolds = 3\nstack = [{model = "glm"}]\n')
    code, _, err = run_cli(ws, capsys, "cv", "toy", "--final", "folds")
    assert_one_line_error(code, err, "final", "a stacked recipe refits its members")
    assert code == 2
