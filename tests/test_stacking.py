"""The second stacking level (issue 31): level-2 members trained on the level-1 members'
out-of-fold predictions inside the same outer folds, so that a level-1 member that knows its
training rows' labels gains nothing there; a stacked recipe from params.toml through cv, train
and submit; a saved stacked model predicts what it predicted before it was saved."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import run_cli
from pipeline.tabular.cv import cross_validate_recipe
from pipeline.tabular.features import FeatureParams
from pipeline.tabular.model import TrainedModel
from pipeline.tabular.recipe import FoldParams, Recipe
from pipeline.tabular.stacking import StackedColumns
from pipeline.tabular.members import LightGBMMember, SklearnMember
from pipeline.tabular.members.boosting import LightGBMParams
from test_recipes import REAL, Memorizer, classification_competition, prices  # noqa: F401  (a fixture)
from test_members import _one_thread  # noqa: F401  (autouse: OpenMP on one thread in this module too)

CPU = torch.device("cpu")
LEVEL2 = (SklearnMember("glm", log_target="auto"),)


def stacked(*members) -> Recipe:
    return Recipe("", FeatureParams(), FoldParams(5, "shuffled", 0), members, "greedy", stack=LEVEL2)


def test_a_level1_member_that_memorizes_its_rows_gains_nothing_at_level2(prices):
    """The memorizer's columns are its out-of-fold guesses (noise), never the labels it learnt:
    the level-2 model scores as it does without it, and the blend gains nothing."""
    honest, _ = cross_validate_recipe(prices, stacked(*REAL))
    cheat, _ = cross_validate_recipe(prices, stacked(*REAL, Memorizer()))
    assert [m.label for m in cheat.members] == ["glm", "lightgbm", "memorizer", "glm (level 2)"]
    assert cheat.members[2].train == [0.0] * 5  # it knows every training row, by heart
    level2, level2_cheat = honest.members[-1], cheat.members[-1]
    assert level2_cheat.mean_valid >= level2.mean_valid * 0.97  # RMSE: no better for the leak
    assert level2_cheat.mean_valid < 2 * level2.mean_valid  # and the memorizer's noise did not ruin it
    assert cheat.score.mean_valid >= honest.score.mean_valid * 0.97


def test_level2_columns_are_the_out_of_fold_predictions_in_the_metrics_space(prices):
    """log_rmse compares logs: the columns are each member's log predictions, standardized."""
    result, _ = cross_validate_recipe(prices, stacked(*REAL))
    level1 = result.oof[:2]
    columns = StackedColumns.fit(level1, prices.spec.scorer).columns(level1, prices.spec.scorer)
    assert columns.shape == (len(prices.y), 2)
    np.testing.assert_allclose(columns.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(columns.std(0), 1, atol=1e-3)
    logs = level1[0, :, 0].double().log()
    assert np.corrcoef(columns[:, 0], logs)[0, 1] == pytest.approx(1)


def test_a_stacked_recipe_from_params_toml_cross_validates_trains_and_submits(tmp_path, capsys):
    ws, truth = classification_competition(tmp_path, "churn", ("no", "yes"), "auc", "yes")
    (ws / "params.toml").write_text('[churn]\nfolds = 3\nepochs = 10\nstack = [{model = "glm"}, '
                                    '{model = "lightgbm", n_estimators = 50}]\n')
    code, out, err = run_cli(ws, capsys, "cv", "churn", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [m["model"] for m in report["members"]] == ["mlp", "lightgbm", "glm", "glm (level 2)",
                                                       "lightgbm (level 2)"]
    assert report["recipe"] == "auto" and [m["model"] for m in report["params"]["stack"]] == ["glm", "lightgbm"]
    assert 0.75 < report["mean_valid"] <= 1 and sum(m["weight"] for m in report["members"]) == pytest.approx(1)
    code, _, err = run_cli(ws, capsys, "submit", "churn")
    assert code == 0, err
    submission = pd.read_csv(ws / "submissions" / "churn.csv")
    assert submission["cid"].tolist() == list(range(740, 800))
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(truth == "yes", submission["label"]) > 0.8


def test_a_saved_stacked_model_predicts_as_before(prices, tmp_path):
    from pipeline.tabular.model import fit_final
    recipe = stacked(*REAL)
    result, _ = cross_validate_recipe(prices, recipe)
    weights = [0.0, 0.2, 0.8]  # the level-2 member weighs: every level-1 member is fit for its columns
    model, _ = fit_final(prices, recipe, [*REAL, *LEVEL2], weights, result.budgets, level1=2, oof=result.oof[:2])
    assert model.level1 == 2 and len(model.members) == 3 and model.stacked is not None
    inputs = model.test_inputs(prices, CPU)
    before = model.predict(inputs)
    path = model.save(tmp_path / "stacked.pt")
    loaded, _ = TrainedModel.load(path, prices.spec.scorer, CPU, "remake")
    np.testing.assert_allclose(loaded.predict(loaded.test_inputs(prices, CPU)), before, rtol=1e-6)
    alone = model.predictions(inputs)
    assert not torch.allclose(alone[1], alone[2])  # the level-2 member is its own model


@pytest.fixture(scope="module")
def shuffled_benefits(shared_datasets, tmp_path_factory):
    """../shared/competitions' benefits with its labels shuffled: coin flips at its rate of
    yes, so any CV AUC clearly above 0.5 is learnt from labels a model should not have seen."""
    from pipeline.tabular.tables import TableSpec, load_tables
    from pipeline.tabular.features import build_features
    folder = shared_datasets.parent / "competitions" / "benefits"
    root = tmp_path_factory.mktemp("shuffled")
    train = pd.read_csv(folder / "train.csv")
    train.assign(ui=np.random.default_rng(1).permutation(train["ui"].to_numpy())).to_csv(root / "train.csv",
                                                                                           index=False)
    tables = load_tables(root / "train.csv", folder / "test.csv",
                         TableSpec("Id", "ui", "classification", "auc", positive="yes"))
    return build_features(tables, FeatureParams(numeric_bins="auto"))


def test_a_level2_model_on_the_features_learns_nothing_from_labels_it_should_not_see(shuffled_benefits):
    """A level-2 linear model on the features and level-1 columns can read a fold's labels out
    of out-of-fold columns that models trained on that fold made (shuffled benefits: AUC 0.58
    so); its training rows' columns come from level-1 models fit inside the fold's training
    rows, so it cannot."""
    members = (SklearnMember("glm"), LightGBMMember(LightGBMParams(n_estimators=200)))
    result, _ = cross_validate_recipe(shuffled_benefits, Recipe(
        "", FeatureParams(), FoldParams(5, "shuffled", 0), members, "greedy", stack=(SklearnMember("glm"),)))
    level1, level2 = result.members[:2], result.members[2]
    assert level2.label == "glm (level 2)"
    assert level2.mean_valid < 0.52 and level2.mean_valid < max(m.mean_valid for m in level1) + 0.015


def test_a_final_fit_whose_time_was_spent_still_makes_a_model_of_the_heaviest_member(prices):
    """A CV that overran its share of a limit (a busy machine) once ended in no model at all."""
    import time
    from pipeline.tabular.budget import Budget
    from pipeline.tabular.model import fit_final
    budget = Budget(time.monotonic() - 1)
    model, score = fit_final(prices, stacked(*REAL), list(REAL), [0.3, 0.7], [None, 50], budget=budget)
    assert [m.label for m in model.members] == ["lightgbm"] and model.weights == [1.0]
    assert [c["member"] for c in budget.cut] == ["glm"]
    assert budget.shortened == [{"member": "lightgbm",
                                 "how": "fit alone, for its CV's length, after the time limit was spent"}]
    assert 0 < score < 0.2 and np.isfinite(model.predict(model.test_inputs(prices, CPU))).all()
