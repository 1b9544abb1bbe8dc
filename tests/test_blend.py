"""Runs keep their predictions and blend (issue 26): a CV run writes oof.csv, its submit adds
test.csv; `pipeline blend` fits weights on the runs' out-of-fold predictions, scores the blend
honestly (fold k's weights never see fold k) and writes the blended submission."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import assert_one_line_error, make_competition, run_cli
from pipeline.api import Pipeline
from pipeline.metrics import METRICS
from pipeline.tabular import runs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """An MLP run and a LightGBM run of one table on the same folds, each submitted."""
    ws = make_competition(tmp_path_factory.mktemp("blend") / "ws", rows=400)
    pipe, names = Pipeline(ws), []
    for model in ("mlp", "lightgbm"):
        names.append(pipe.cv("toy", model=model)["run"])
        pipe.submit("toy", model=model)
    return ws, names


def test_each_run_keeps_its_out_of_fold_and_test_predictions(two_runs):
    ws, names = two_runs
    for name in names:
        run_dir = ws / "reports" / "runs" / name
        report = json.loads((run_dir / "report.json").read_text())
        oof, test = pd.read_csv(run_dir / "oof.csv"), pd.read_csv(run_dir / "test.csv")
        assert list(oof.columns) == ["key", "fold", "price"] and list(test.columns) == ["key", "price"]
        assert sorted(oof["fold"].unique()) == list(range(5)) and len(oof) == 400 and len(test) == 200
        truth = pd.read_csv(ws / "train.csv").set_index("key").loc[oof["key"], "price"].to_numpy()
        folds = [np.sqrt(np.mean((np.log(oof["price"][oof["fold"] == k]) - np.log(truth[oof["fold"] == k])) ** 2))
                 for k in range(5)]
        assert folds == pytest.approx([f["valid"] for f in report["folds"]], abs=1e-4)  # the report's own folds


def test_the_blend_of_two_runs_scores_what_weights_fit_without_each_fold_give(two_runs, capsys):
    """An honest blend promises its score is what weights fit without the scored fold give, not
    that it beats every run (on a fold that disagrees with the others it need not): rebuilt here
    from the runs' oof.csv files, fold by fold."""
    ws, names = two_runs
    code, out, err = run_cli(ws, capsys, "blend", *names, "--out", str(ws / "blend.csv"), "--json")
    assert code == 0, err
    done = json.loads(out)
    oofs = [pd.read_csv(ws / "reports" / "runs" / n / "oof.csv") for n in names]
    fold_of = oofs[0]["fold"].to_numpy()
    truth = pd.read_csv(ws / "train.csv").set_index("key").loc[oofs[0]["key"], "price"].to_numpy()
    logs = np.stack([np.log(o["price"].to_numpy()) for o in oofs])  # log_rmse blends in log space
    metric = METRICS["log_rmse"]
    as_tensor = torch.from_numpy(np.stack([o["price"].to_numpy() for o in oofs])).float()[:, :, None]
    folds = []
    for k in range(5):
        weights = runs.fit_weights("greedy", as_tensor[:, fold_of != k], torch.tensor(truth[fold_of != k]).float(), metric)
        blended = sum(w * log[fold_of == k] for w, log in zip(weights, logs))
        folds.append(np.sqrt(np.mean((blended - np.log(truth[fold_of == k])) ** 2)))
    assert done["blend"] == pytest.approx(np.mean(folds), abs=1e-4), done["rows"]
    assert done["rows"][-1]["mean valid"] == done["blend"]
    submission = pd.read_csv(ws / "blend.csv")
    assert list(submission.columns) == ["key", "price"] and len(submission) == 200
    weights = [row["weight"] for row in done["rows"][:2]]
    assert weights == pytest.approx(runs.fit_weights("greedy", as_tensor, torch.tensor(truth).float(), metric))
    tests = [pd.read_csv(ws / "reports" / "runs" / n / "test.csv")["price"].to_numpy() for n in names]
    expected = np.exp(sum(w * np.log(t) for w, t in zip(weights, tests)))
    np.testing.assert_allclose(submission["price"], expected, rtol=1e-4)


def test_the_blends_cv_is_honest():
    """Run A is perfect on folds 2-5 and wrong on fold 1, run B the reverse: weights fit
    without fold 1 see only A's perfection, so fold 1's blend must be A's (wrong) prediction;
    weights fit on every row would have chosen B for it."""
    y = torch.linspace(1, 2, 50)
    fold_of = torch.arange(50) % 5
    wrong = y + 1.0
    a, b = torch.where(fold_of == 0, wrong, y), torch.where(fold_of == 0, y, wrong)
    metric = METRICS["rmse"]
    with _runs_of(y, fold_of, a, b) as run_dirs:
        done = runs.blend_runs(run_dirs, y, metric, "id", ["y"], "greedy", "t")
    assert done["blend"][0] == pytest.approx(1.0) and done["runs"][0][0] == pytest.approx(1.0)
    leaky = runs.blend([a[fold_of == 0, None], b[fold_of == 0, None]], metric,
                       runs.fit_weights("greedy", torch.stack([a, b])[:, :, None], y, metric))
    assert float(metric.score(leaky[:, 0], y[fold_of == 0])) < 0.9  # what a leak would have scored


class _runs_of:
    """Two runs' oof.csv and test.csv in temporary folders."""

    def __init__(self, y, fold_of, *predictions):
        import tempfile

        self.tmp = tempfile.TemporaryDirectory()
        self.dirs = []
        for i, p in enumerate(predictions):
            run_dir = Path(self.tmp.name) / f"run{i}"
            run_dir.mkdir()
            runs.write(run_dir / "oof.csv", "id", list(range(len(y))), p[:, None], ["y"], fold_of)
            runs.write(run_dir / "test.csv", "id", [100, 101], torch.ones(2, 1), ["y"])
            self.dirs.append(run_dir)

    def __enter__(self):
        return self.dirs

    def __exit__(self, *exc):
        self.tmp.cleanup()


def test_runs_on_other_folds_or_without_test_predictions_are_refused(two_runs, capsys):
    ws, names = two_runs
    code, out, err = run_cli(ws, capsys, "cv", "toy", "--model", "lightgbm", "--seed", "3", "--json")
    assert code == 0, err
    other = json.loads(out)["run"]  # never submitted, and other folds
    code, _, err = run_cli(ws, capsys, "blend", names[0], other)
    assert_one_line_error(code, err, f"run {other} has no test.csv: run `pipeline submit toy` after that CV")
    (ws / "reports" / "runs" / other / "test.csv").write_bytes(
        (ws / "reports" / "runs" / names[0] / "test.csv").read_bytes())
    code, _, err = run_cli(ws, capsys, "blend", names[0], other)
    assert_one_line_error(code, err, "were cross-validated on different folds")
    code, _, err = run_cli(ws, capsys, "blend", names[0], "no-such-run")
    assert_one_line_error(code, err, "no run no-such-run")
