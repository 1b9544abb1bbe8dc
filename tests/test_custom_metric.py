"""A competition's own metric (issue 26): `metric = "scoring.py:function"` in a target is what
its CV, blend and reports score with; mistakes in declaring it are one line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers import assert_one_line_error, run_cli

SCORING = '''
import numpy as np
from sklearn.metrics import roc_auc_score


def gini(y_true, y_pred):
    return 2 * roc_auc_score(y_true, y_pred) - 1


def mape(y_true, y_pred):
    return float(np.mean(np.abs(y_pred - y_true) / np.abs(y_true)))
'''


def _workspace(tmp_path, task: str, metric: str, extra: str = "") -> tuple:
    r = np.random.default_rng(0)
    x = r.normal(size=(300, 2))
    noise = r.normal(0, 0.7, 300)
    y = (x[:, 0] + noise > 0).astype(int) if task == "classification" else 30 + 3 * x[:, 0] + x[:, 1] + noise
    pd.DataFrame({"id": range(240), "a": x[:240, 0], "b": x[:240, 1], "y": y[:240]}).to_csv(
        tmp_path / "train.csv", index=False)
    pd.DataFrame({"id": range(240, 300), "a": x[240:, 0], "b": x[240:, 1]}).to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "scoring.py").write_text(SCORING)
    (tmp_path / "pipeline.toml").write_text(
        f'[target.own]\ntrain = "train.csv"\ntest = "test.csv"\nid = "id"\nlabel = "y"\ntask = "{task}"\n'
        f'metric = "{metric}"\n{extra}')
    return tmp_path


def _fold_scores(ws, report: dict, score) -> list[float]:
    oof = pd.read_csv(ws / "reports" / "runs" / report["run"] / "oof.csv")
    truth = pd.read_csv(ws / "train.csv").set_index("id").loc[oof["id"], "y"].to_numpy()
    column = oof.columns[-1]  # P(class 1), or the value
    return [score(truth[oof["fold"] == k], oof[column][oof["fold"] == k].to_numpy()) for k in range(5)]


def test_a_custom_binary_metric_scores_the_cv_on_probabilities(tmp_path, capsys):
    ws = _workspace(tmp_path, "classification", "scoring.py:gini", "higher_is_better = true\n")
    code, out, err = run_cli(ws, capsys, "cv", "own", "--model", "lightgbm", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["metric"] == f"{ws.resolve()}/scoring.py:gini"
    expected = _fold_scores(ws, report, lambda y, p: 2 * roc_auc_score(y, p) - 1)
    assert [f["valid"] for f in report["folds"]] == pytest.approx(expected, abs=1e-6)
    assert 0.3 < report["mean_valid"] < 1
    code, out, err = run_cli(ws, capsys, "cv", "own", "--model", "glm", "--json")  # a second run, compared
    assert code == 0, err
    second = json.loads(out)
    better = second["mean_valid"] > report["mean_valid"]
    assert ("better than" if better else "worse than") in second_headline(ws, second)
    code, out, _ = run_cli(ws, capsys, "runs", "--json")
    assert [row["score"] for row in json.loads(out)] == sorted([report["mean_valid"], second["mean_valid"]],
                                                               reverse=True)  # higher is better: first


def second_headline(ws, report: dict) -> str:
    return (ws / "reports" / "runs" / report["run"] / "report.md").read_text()


def test_a_custom_regression_metric_lower_is_better_through_the_whole_recipe(tmp_path, capsys):
    ws = _workspace(tmp_path, "regression", "scoring.py:mape", "higher_is_better = false\n")
    code, out, err = run_cli(ws, capsys, "cv", "own", "--json")  # the default recipe: a blend of members
    assert code == 0, err
    report = json.loads(out)
    expected = _fold_scores(ws, report, lambda y, p: float(np.mean(np.abs(p - y) / np.abs(y))))
    assert [f["valid"] for f in report["folds"]] == pytest.approx(expected, rel=1e-4)
    assert report["mean_valid"] < 0.1
    assert run_cli(ws, capsys, "submit", "own")[0] == 0


@pytest.mark.parametrize("metric, extra, needle", [
    ("scoring.py:gini", "", "a custom metric needs its direction: higher_is_better = true or false"),
    ("missing.py:gini", "higher_is_better = true\n", "cannot load"),
    ("scoring.py:nothing", "higher_is_better = true\n", "has no function 'nothing'"),
    ("scoring.py:gini", "higher_is_better = true\nsubmits = \"values\"\n", "does not fit task 'classification'"),
])
def test_a_custom_metric_declared_wrong_is_one_line(tmp_path, capsys, metric, extra, needle):
    ws = _workspace(tmp_path, "classification", metric, extra)
    code, _, err = run_cli(ws, capsys, "cv", "own")
    assert_one_line_error(code, err, needle)
    assert code == 2
