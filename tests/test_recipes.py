"""Recipes end to end (issue 14): probability metrics through the CLI (binary AUC and log-loss
submit P(positive class), multiclass log-loss one column per class), the honest blend (a member
that memorizes its training rows gains nothing in the CV score), and the auto recipe that every
declared target gets by default."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from helpers import assert_one_line_error, declare, make_competition, run_cli
from pipeline.folds import fold_rows
from pipeline.tabular.cv import cross_validate_recipe
from pipeline.tabular.ensemble import blend, fit_weights
from pipeline.tabular.features import FeatureParams, Features, build_features
from pipeline.tabular.members import FitReport, Fitted, LightGBMMember, SklearnMember, TrainingSet
from pipeline.tabular.members.boosting import LightGBMParams
from pipeline.tabular.model import TrainedModel
from pipeline.tabular.recipe import FoldParams, Recipe
from pipeline.tabular.tables import TableSpec, load_tables
from test_members import _one_thread  # noqa: F401  (autouse: OpenMP on one thread in this module too)

CPU = torch.device("cpu")


def classification_competition(root: Path, name: str, classes: tuple, metric: str, positive=None,
                               rows: int = 240, test_rows: int = 60, seed: int = 0) -> tuple[Path, np.ndarray]:
    """A declared classification target whose label is one of ``classes``, set by the features
    (numbers, a category with NaN) and some noise; its params shorten the auto recipe (3 folds,
    10 MLP epochs). Returns the workspace and the test rows' true labels."""
    r = np.random.default_rng(seed)
    n = rows + test_rows
    frame = pd.DataFrame({"cid": np.arange(500, 500 + n), "tenure": r.normal(0, 1, n), "spend": r.gamma(2, 50, n),
                          "plan": r.choice(["basic", "pro", None], n)})
    score = frame["tenure"] - 0.01 * frame["spend"] + 0.8 * (frame["plan"] == "pro")
    noisy = score + r.normal(0, 0.4, n)
    cuts = np.quantile(noisy, np.arange(1, len(classes)) / len(classes))
    truth = np.array(classes, dtype=object)[np.digitize(noisy, cuts)]
    ws = root / "ws"
    ws.mkdir(parents=True)
    frame.iloc[:rows].assign(label=truth[:rows]).to_csv(ws / "train.csv", index=False)
    frame.iloc[rows:].to_csv(ws / "test.csv", index=False)
    keys = dict(train="train.csv", test="test.csv", id="cid", label="label", task="classification", metric=metric)
    (ws / "pipeline.toml").write_text(declare(name, **keys, **({"positive": positive} if positive else {})))
    (ws / "params.toml").write_text(f"[{name}]\nfolds = 3\nepochs = 10\n")
    return ws, truth[rows:]


def cv_report(ws: Path, capsys, *args: str) -> dict:
    code, out, err = run_cli(ws, capsys, "cv", *args, "--json")
    assert code == 0, err
    return json.loads(out)


# ----------------------------------------------------------------------------- probability submissions


@pytest.mark.parametrize("classes, positive, metric, expected", [
    (("no", "yes"), "yes", "auc", "yes"),
    (("a", "b"), "a", "auc", "a"),  # the positive class first in sorted order: the column is P(a)
    (("a", "b"), None, "logloss", "b"),  # none declared: the last in sorted order
], ids=["yes", "declared-first", "undeclared-logloss"])
def test_binary_probability_target_submits_p_of_the_positive_class(tmp_path, capsys, classes, positive, metric,
                                                                   expected):
    ws, truth = classification_competition(tmp_path, "churn", classes, metric, positive)
    report = cv_report(ws, capsys, "churn")
    assert report["metric"] == metric and report["positive_class"] == expected
    assert [m["model"] for m in report["members"]] == ["mlp", "lightgbm", "glm"]
    if metric == "auc":
        assert 0.75 < report["mean_valid"] <= 1
    else:
        assert report["mean_valid"] < math.log(2)

    code, _, err = run_cli(ws, capsys, "submit", "churn")
    assert code == 0, err
    assert "cv: up to date, skipped" in err  # the submission is made by the recipe just cross-validated
    lines = (ws / "submissions" / "churn.csv").read_text().splitlines()
    assert lines[0] == "cid,label" and len(lines) == 61
    submission = pd.read_csv(ws / "submissions" / "churn.csv")
    assert submission["cid"].tolist() == list(range(740, 800))
    p = submission["label"].to_numpy()
    assert p.dtype == np.float64 and ((p >= 0) & (p <= 1)).all() and len(np.unique(p)) > 30
    is_positive = truth == expected
    assert roc_auc_score(is_positive, p) > 0.8  # P(positive): high where the positive class is
    assert np.corrcoef(is_positive, p)[0, 1] > 0.5
    if metric == "logloss":
        assert log_loss(is_positive, p) < math.log(2)


def test_multiclass_logloss_target_submits_one_column_per_class(tmp_path, capsys):
    classes = ("cat", "dog", "emu")
    ws, truth = classification_competition(tmp_path, "zoo", classes, "logloss")
    report = cv_report(ws, capsys, "zoo")
    assert report["metric"] == "logloss" and "positive_class" not in report
    assert 0 < report["mean_valid"] < math.log(3)  # better than 1/3 each
    code, _, err = run_cli(ws, capsys, "submit", "zoo")
    assert code == 0, err
    lines = (ws / "submissions" / "zoo.csv").read_text().splitlines()
    assert lines[0] == "cid,cat,dog,emu" and len(lines) == 61  # Kaggle's format: the id, then a column per class
    submission = pd.read_csv(ws / "submissions" / "zoo.csv")
    assert submission["cid"].tolist() == list(range(740, 800))
    p = submission[list(classes)].to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert (np.array(classes)[p.argmax(1)] == truth).mean() > 0.6  # chance is 1/3
    assert log_loss(truth, p / p.sum(1, keepdims=True), labels=list(classes)) < math.log(3)


@pytest.mark.parametrize("flags", [(), ("--model", "linear", "--epochs", "3")], ids=["auto", "linear"])
def test_auc_on_a_three_class_target_is_a_one_line_error(tmp_path, capsys, flags):
    ws, _ = classification_competition(tmp_path, "three", ("x", "y", "z"), "auc")
    code, _, err = run_cli(ws, capsys, "cv", "three", *flags)
    assert_one_line_error(code, err, "metric auc is for two classes", "has 3 classes (x, y, z)")
    assert code == 1 and not (ws / "data" / "three" / "features.pt").exists()


# ----------------------------------------------------------------------------- the honest blend


class Memorizer:
    """A member that has learnt its training rows by heart: their exact labels, and for any
    other row a guess far from every label (noise around the mean price, in log space)."""

    label = "memorizer"

    def fit(self, data: TrainingSet, rows: list[torch.Tensor], **_) -> "Memorized":
        return Memorized(data, rows)


def _keys(X: torch.Tensor) -> list[bytes]:
    return [row.numpy().tobytes() for row in X.cpu()]


class Memorized(Fitted):
    label = "memorizer"

    def __init__(self, data: TrainingSet, rows: list[torch.Tensor]):
        self.report = FitReport(0.0, np.zeros(len(rows), dtype=int))
        keys, y = _keys(data.X), data.y.cpu().tolist()
        self.known = [{keys[i]: y[i] for i in group.tolist()} for group in rows]
        self.centre = float(data.y.log().mean())

    def predict(self, inputs, rows=None) -> torch.Tensor:
        keys = _keys(inputs.dense)
        noise = np.random.default_rng(0).normal(self.centre, 2.0, len(keys))
        out = [[known.get(key, math.exp(guess)) for key, guess in zip(keys, noise)] for known in self.known]
        return torch.tensor(out, dtype=torch.float32, device=inputs.dense.device).unsqueeze(-1)

    def state(self) -> dict:
        return {}


@pytest.fixture(scope="module")
def prices(tmp_path_factory):
    """helpers.make_competition's 240 rows of prices (log_rmse), as features."""
    root = make_competition(tmp_path_factory.mktemp("prices"))
    tables = load_tables(root / "train.csv", root / "test.csv", TableSpec("key", "price", "regression", "log_rmse"))
    features = build_features(tables, FeatureParams(numeric_bins=8))
    assert len(set(_keys(features.X))) == len(features.X)  # every row tells itself apart
    return features


REAL = (SklearnMember("glm", log_target="auto"),
        LightGBMMember(LightGBMParams(n_estimators=300, min_child_samples=5, log_target="auto")))


def greedy(*members) -> Recipe:
    """A recipe of ``members`` blended by ensemble selection, on 5 shuffled folds."""
    return Recipe("", FeatureParams(), FoldParams(5, "shuffled", 0), members, "greedy")


def test_a_member_that_memorizes_its_training_rows_gains_nothing_in_cv(prices):
    honest, _ = cross_validate_recipe(prices, greedy(*REAL))
    cheat, _ = cross_validate_recipe(prices, greedy(*REAL, Memorizer()))
    memorizer = cheat.members[2]
    assert memorizer.train == [0.0] * 5  # it knows every training row
    assert memorizer.mean_valid > 3 * max(m.mean_valid for m in honest.members)  # and nothing else
    # the blend's fold scores with it are no better than without it
    assert cheat.score.mean_valid >= honest.score.mean_valid - 1e-9
    assert all(w[2] <= 0.05 for w in cheat.fold_weights) and cheat.weights[2] <= 0.05
    for members in (honest, cheat):
        assert all(sum(w) == pytest.approx(1) for w in [members.weights, *members.fold_weights])


def test_each_folds_blend_weights_are_fit_on_the_other_folds_only(prices):
    """Fold k is scored by the blend of its out-of-fold predictions, with weights fit by ensemble
    selection on the other folds' out-of-fold predictions alone."""
    result, _ = cross_validate_recipe(prices, greedy(*REAL, Memorizer()))
    metric, y = prices.spec.scorer, prices.y
    valid = [rows for _, rows in fold_rows(y, 5, "shuffled", 0)]
    assert result.oof.shape == (3, len(y), 1)
    for k, rows in enumerate(valid):
        others = torch.ones(len(y), dtype=torch.bool)
        others[rows] = False
        assert result.fold_weights[k] == fit_weights("greedy", result.oof[:, others], y[others], metric)
        blended = blend(list(result.oof[:, rows]), metric, result.fold_weights[k])
        assert result.score.valid[k] == pytest.approx(float(metric.score(blended[:, 0], y[rows])), rel=1e-6)
    assert result.weights == fit_weights("greedy", result.oof, y, metric)  # the submission's: every oof row


def test_weights_fit_on_in_sample_predictions_would_favour_the_memorizer(prices):
    """The control: weighed on the rows each model trained on, ensemble selection picks the
    memorizer alone, and that blend scores perfectly there and worst on the held-out rows."""
    data = TrainingSet(prices, CPU)
    splits = fold_rows(prices.y, 5, "shuffled", 0)
    train, valid = [tr for tr, _ in splits], [va for _, va in splits]
    members = [*REAL, Memorizer()]
    predictions = torch.stack([m.fit(data, train).predict(data.train) for m in members])  # (M, G, N, 1)
    metric = data.metric
    for g, (tr, va) in enumerate(zip(train, valid)):
        weights = fit_weights("greedy", predictions[:, g, tr], data.y[tr], metric)
        assert weights[2] >= 0.9, weights
        in_sample = blend(list(predictions[:, g, tr]), metric, weights)[:, 0]
        held_out = blend(list(predictions[:, g, va]), metric, weights)[:, 0]
        real = blend(list(predictions[:2, g, va]), metric, weights[:2] if sum(weights[:2]) else [0.5, 0.5])[:, 0]
        assert float(metric.score(in_sample, data.y[tr])) < 0.01
        assert float(metric.score(held_out, data.y[va])) > 2 * float(metric.score(real, data.y[va]))


# ----------------------------------------------------------------------------- the auto recipe


def test_the_auto_recipe_is_a_declared_targets_default_from_cv_to_submission(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text("")  # nothing chosen: the target's defaults
    report = cv_report(ws, capsys, "toy")
    assert report["params"]["recipe"] == "auto" and report["params"]["blend"] == "greedy"
    members = report["members"]
    assert [m["model"] for m in members] == ["mlp", "lightgbm", "glm"]
    assert all(math.isfinite(m["mean_valid"]) and m["seconds"] > 0 for m in members)
    weights = [m["weight"] for m in members]
    assert weights == report["blend"]["weights"] and sum(weights) == pytest.approx(1)
    assert len(report["blend"]["fold_weights"]) == 5
    assert all(sum(w) == pytest.approx(1) for w in report["blend"]["fold_weights"])
    mlp, trees, glm = (m["budget"] for m in members)
    assert 1 <= mlp <= 30 and trees >= 1 and glm is None  # the best epoch and boosting round, per fold
    oof = torch.load(ws / "data" / "toy" / "oof.pt", weights_only=True)
    assert oof["weights"] == weights and oof["budgets"] == [mlp, trees, glm]
    assert oof["predictions"].shape == (3, 240, 1)

    code, out, err = run_cli(ws, capsys, "train", "toy", "--json")
    assert code == 0, err
    assert json.loads(out)["weights"] == weights
    state = torch.load(ws / "models" / "toy.pt", weights_only=True)
    assert state["weights"] == weights
    torch_state, trees_state, glm_state = state["members"]
    config = torch_state["config"]
    assert config["epochs"] == max(1, round(mlp)) and config["inner_valid"] == 0  # every row, the folds' budget
    assert [lightgbm.Booster(model_str=s).current_iteration() for s in trees_state["models"][0]] == [round(trees)]
    assert glm_state["family"] == "glm" and glm_state["models"].dtype == torch.uint8  # its estimators (skops)

    code, _, err = run_cli(ws, capsys, "submit", "toy")
    assert code == 0, err
    assert "train: up to date, skipped" in err
    submission = pd.read_csv(ws / "submissions" / "toy.csv")
    assert len(submission) == 120 and submission["price"].gt(0).all()
    # the submission is the checkpoint's members blended with its weights (geometric, for log_rmse)
    saved = torch.load(ws / "data" / "toy" / "features.pt", weights_only=True)
    features = Features.from_state({k: v for k, v in saved.items() if k != "format"})
    model, _ = TrainedModel.load(ws / "models" / "toy.pt", features.spec.scorer, CPU, "pipeline train toy")
    test = TrainingSet(features, CPU).test
    logs = torch.stack([f.predict(test)[0, :, 0].double().log() for f in model.members])
    expected = torch.exp(torch.tensor(weights, dtype=torch.float64) @ logs).numpy()
    np.testing.assert_allclose(submission["price"], expected, rtol=1e-5)
    assert not np.allclose(submission["price"], torch.exp(logs.mean(0)).numpy(), rtol=1e-3)  # not equal weights


def test_epochs_flag_reaches_the_auto_recipes_mlp_but_not_a_user_written_ensemble(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text("[toy]\nfolds = 3\n")
    report = cv_report(ws, capsys, "toy", "--epochs", "3")
    mlp, trees, glm = report["params"]["ensemble"]
    assert mlp["model"] == "mlp" and mlp["epochs"] == 3
    assert "epochs" not in trees and "epochs" not in glm  # members without epochs are left as they are
    assert mlp["hidden"] == [128, 128] and mlp["submodels"] == 4  # the rest of the auto recipe's MLP stays
    assert 1 <= report["members"][0]["budget"] <= 3  # it trained 3 epochs: its best is among them

    (ws / "params.toml").write_text('[toy]\nfolds = 3\nensemble = [\n'
                                    '  {model = "mlp", hidden = [8], epochs = 2, lr = 0.01, inner_valid = 0.2},\n'
                                    '  {model = "glm"},\n]\n')
    report = cv_report(ws, capsys, "toy", "--epochs", "3")
    mlp, glm = report["params"]["ensemble"]
    assert {k: mlp[k] for k in ("model", "hidden", "epochs", "lr", "inner_valid")} == \
        {"model": "mlp", "hidden": [8], "epochs": 2, "lr": 0.01, "inner_valid": 0.2}
    assert glm == {"model": "glm", "log_target": "auto"}
    assert [m["model"] for m in report["members"]] == ["mlp", "glm"]
    assert 1 <= report["members"][0]["budget"] <= 2  # the member's own 2 epochs, not the flag's 3


# ----------------------------------------------------------------------------- the best preset


def test_the_best_preset_leaves_out_a_member_whose_library_is_missing(tmp_path, capsys, monkeypatch, caplog):
    """`--recipe best` without CatBoost installed runs the rest and says what to install; a
    catboost member written in params.toml is a one-line error before any work."""
    from pipeline.tabular.members.catboost import CatBoostMember
    monkeypatch.setattr(CatBoostMember, "missing", lambda self: 'pip install "foldstack[best]"')
    ws, _ = classification_competition(tmp_path, "churn", ("no", "yes"), "auc", "yes")
    (ws / "params.toml").write_text("[churn]\nfolds = 3\nepochs = 10\n")
    report = cv_report(ws, capsys, "churn", "--recipe", "best")
    assert report["recipe"] == "best"
    assert [m["model"] for m in report["members"]] == ["mlp", "lightgbm", "glm", "lightgbm", "mlp (no splines)"]
    assert 'catboost member is left out: it is not installed (pip install "foldstack[best]")' in caplog.text
    (ws / "params.toml").write_text('[churn]\nfolds = 3\nensemble = [{model = "catboost"}]\n')
    code, _, err = run_cli(ws, capsys, "cv", "churn")
    assert_one_line_error(code, err, 'model catboost is not installed: pip install "foldstack[best]"')
