"""In-fold features and the splits that fit a table (issue 23): what is fit on labels is fit
inside each fold, so the CV stays honest; group and time splits keep the test's kind of rows
out of training."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import declare, run_cli
from pipeline.folds import fold_rows
from pipeline.metrics import metric_for
from pipeline.tabular.infold import InFold, fit_infold
from pipeline.tabular.trainer import TrainParams, fit
from test_members import _one_thread  # noqa: F401  (autouse: OpenMP on one thread in this module too)


def competition(root, rows: int = 600, seed: int = 0, leak: bool = False, noise: bool = False, **keys):
    """A regression table: two informative numbers and a date; with ``noise``, a category that is
    different in every row (declared a category, so the target encoding sees it); with ``leak``,
    a number that is each row's own label plus a little noise (a target encoding fit outside the
    folds would be exactly that)."""
    r = np.random.default_rng(seed)
    n = rows + rows // 3
    frame = pd.DataFrame({"key": np.arange(n), "a": r.normal(size=n), "b": r.normal(size=n),
                          "when": (pd.Timestamp("2021-01-01") + pd.to_timedelta(np.arange(n), unit="h")).astype(str)})
    y = np.exp(2 + 0.5 * frame.a - 0.3 * frame.b + r.normal(0, 0.3, n))
    if noise:
        frame["tag"] = [f"t{v}" for v in r.permutation(n)]
    if leak:
        frame["own"] = np.log(y) + r.normal(0, 0.05, n)
    frame["y"] = y
    root.mkdir(parents=True, exist_ok=True)
    frame.iloc[:rows].to_csv(root / "train.csv", index=False)
    frame.iloc[rows:].drop(columns=["y"]).to_csv(root / "test.csv", index=False)
    (root / "pipeline.toml").write_text(declare("t", train="train.csv", test="test.csv", id="key", label="y",
                                                task="regression", metric="rmsle", **keys)
                                        + ('columns = {category = ["tag"]}\n' if noise else ""))
    (root / "params.toml").write_text("[t]\nfolds = 4\n")
    return root


def cv(ws, capsys, *flags) -> dict:
    code, out, err = run_cli(ws, capsys, "cv", "t", "--json", "--model", "lightgbm", *flags)
    assert code == 0, err
    return json.loads(out)


def test_a_category_of_per_row_noise_gives_no_cv_advantage(tmp_path, capsys):
    """Target encoding fit inside the folds, with a K-fold within each fold for its own rows: a
    level seen once carries nothing, so a column unique to each row changes nothing; the control,
    the label itself leaked into a feature, shows the CV would tell a leak."""
    base = cv(competition(tmp_path / "base"), capsys)["mean_valid"]
    noisy = cv(competition(tmp_path / "noise", noise=True), capsys)
    leaked = cv(competition(tmp_path / "leak", leak=True), capsys)["mean_valid"]
    assert noisy["mean_valid"] >= base - 0.01, (noisy["mean_valid"], base)
    assert leaked < 0.5 * base  # the control: a leak shows
    assert any(c["column"] == "tag" and c["role"] == "category (declared)" for c in noisy["columns"])
    # what the in-fold columns cost is reported, since no member's time holds it
    assert noisy["infold_seconds"] > 0 and "infold_seconds" not in cv(competition(tmp_path / "base"), capsys)
    markdown = (tmp_path / "noise" / "reports" / "runs" / noisy["run"] / "report.md").read_text()
    assert f"every member: {noisy['infold_seconds']:.1f} s" in markdown


def test_group_split_keeps_each_group_in_one_fold():
    labels = torch.arange(300) % 2
    groups = np.repeat(np.arange(30), 10)
    splits = fold_rows(labels, 5, "group", 0, stratify=True, groups=groups)
    seen = np.zeros(300, dtype=int)
    for train, valid in splits:
        assert not set(groups[train.numpy()]) & set(groups[valid.numpy()])
        seen[valid.numpy()] += 1
    assert (seen == 1).all()


def test_time_split_validates_the_future_on_the_past():
    times = np.random.default_rng(0).permutation(500).astype(float)
    times[:5] = np.nan  # unknown times: always trained on, never validated
    splits = fold_rows(torch.zeros(500), 4, "time", 0, times=times)
    assert len(splits) == 4
    for train, valid in splits:
        assert np.nanmax(times[train.numpy()]) < times[valid.numpy()].min()
        assert set(range(5)) <= set(train.tolist())
    first = np.sort(times[~np.isnan(times)])[:99]  # the first of 5 blocks of time
    assert not set(np.flatnonzero(np.isin(times, first))) & set(np.concatenate([v.numpy() for _, v in splits]))


def test_a_time_split_cv_trains_runs_and_submits(tmp_path, capsys):
    ws = competition(tmp_path / "ws")
    code, out, err = run_cli(ws, capsys, "cv", "t", "--json", "--split", "time")
    assert code == 0, err
    report = json.loads(out)
    assert len(report["folds"]) == 4 and all(np.isfinite(f["valid"]) for f in report["folds"])
    assert [m["model"] for m in report["members"]] == ["mlp", "lightgbm", "glm"]
    code, _, err = run_cli(ws, capsys, "submit", "t", "--split", "time")
    assert code == 0, err


def test_in_fold_columns_train_as_the_same_columns_in_the_table():
    """Each group's own columns go after the shared ones: the same network as with them in X."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(240, 6, generator=g)
    y = X @ torch.randn(6, generator=g) + 0.1 * torch.randn(240, generator=g)
    train = [torch.arange(0, 160), torch.arange(80, 240)]
    valid = [torch.arange(160, 240), torch.arange(0, 80)]
    config = TrainParams(model="mlp", hidden=(8,), epochs=3, lr=0.01, batch_size=16, inner_valid=0.2)
    whole = fit(X, y, train, [config], metric="rmse", valid_rows=valid)
    split = fit(X[:, :4], y, train, [config], metric="rmse", valid_rows=valid, extra=X[:, 4:].expand(2, -1, -1))
    np.testing.assert_allclose(split.valid_curve, whole.valid_curve, rtol=1e-5)
    torch.testing.assert_close(split.model.theta, whole.model.theta)


@pytest.mark.parametrize("task, metric, classes", [("regression", "rmse", 0), ("classification", "logloss", 3)])
def test_encoders_saved_before_the_task_was_asked_still_load(task, metric, classes):
    """An InFold state of ``{"groups", "classes"}`` (0 classes: a regression) loads as the task's."""
    r = np.random.default_rng(0)
    codes = torch.from_numpy(r.integers(0, 40, (300, 2)))
    y = torch.from_numpy(r.integers(0, 3, 300)) if classes else torch.from_numpy(r.normal(size=300).astype(np.float32))
    encoders, _ = fit_infold(codes, [], y, metric_for(metric, task), max(classes, 1), [torch.arange(300)])
    old = {"groups": encoders.state()["groups"], "classes": classes}
    loaded = InFold.from_state(old)
    assert loaded.task is encoders.task and loaded.outputs == encoders.outputs
    torch.testing.assert_close(loaded.values(codes.numpy(), []), encoders.values(codes.numpy(), []), rtol=0, atol=0)
