"""Time limits (issue 24): a command's members share its time, each stops or is cut when its
share runs out, and the report says what was cut. The clock is faked where the test needs
time to pass: every reading of it moves it on by a second."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from helpers import assert_one_line_error, make_competition, run_cli
from pipeline.errors import ParamError
from pipeline.tabular import budget as budget_module
from pipeline.tabular.budget import Budget, OutOfTime, seconds
from pipeline.tabular.members import LightGBMMember, SklearnMember, TorchMember
from pipeline.tabular.members.boosting import LightGBMParams
from pipeline.tabular.trainer import TrainParams, fit
from test_members import MLP, _one_thread, data_for, three_folds  # noqa: F401  (_one_thread: autouse)


@pytest.mark.parametrize("given, expected", [("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), (600, 600.0),
                                             ("45", 45.0), (None, None), (0, None)])
def test_durations_read_as_seconds(given, expected):
    assert seconds(given) == expected


@pytest.mark.parametrize("given", ["banana", "-5m", "10 minutes", "5d"])
def test_a_bad_duration_is_a_param_error(given):
    with pytest.raises(ParamError, match="give seconds or a duration such as 90s, 10m or 1.5h"):
        seconds(given)


@pytest.fixture
def ticking(monkeypatch):
    """A clock that moves on one second each time it is read, in every module that reads it."""
    clock = itertools.count()
    fake = lambda: float(next(clock))  # noqa: E731
    for module in ("pipeline.tabular.trainer", "pipeline.tabular.budget", "pipeline.tabular.members.boosting",
                   "pipeline.tabular.members.library", "pipeline.tabular.members.base"):
        monkeypatch.setattr(f"{module}.time.monotonic", fake)
    return clock


def regression(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    return X, X @ torch.randn(4, generator=g) + 0.1 * torch.randn(n, generator=g)


def test_a_torch_run_trains_the_epochs_that_fit_and_says_why_it_stopped(ticking):
    X, y = regression()
    config = TrainParams(model="mlp", hidden=(8,), epochs=50, lr=0.01, batch_size=200)
    now = next(ticking)
    result = fit(X, y, [torch.arange(150)], [config], metric="rmse", deadline=now + 12)
    assert result.stopped == "time" and 1 <= result.epochs_run < 50 and result.planned == 50
    assert np.isfinite(result.final_train).all()
    everything = fit(X, y, [torch.arange(150)], [config], metric="rmse")
    assert (everything.epochs_run, everything.stopped) == (50, "")


def test_a_first_epoch_that_cannot_fit_is_out_of_time(ticking):
    X, y = regression()
    config = TrainParams(epochs=3, lr=0.01, batch_size=10)  # 15 steps an epoch, a second each
    with pytest.raises(OutOfTime, match="an epoch would take"):  # its first steps read the clock once
        fit(X, y, [torch.arange(150)], [config], metric="rmse", deadline=next(ticking) + 1)


def test_members_under_a_deadline_stop_short_or_are_cut(ticking):
    data = data_for("regression")
    train, valid = three_folds(data.features)
    now = next(ticking)
    boosted = LightGBMMember(LightGBMParams(n_estimators=500, log_target="auto")).fit(data, train, deadline=now + 40)
    assert "boosting stopped for time" in boosted.report.shortened
    with pytest.raises(OutOfTime, match="no time was left"):
        LightGBMMember().fit(data, train, deadline=next(ticking) - 1)
    with pytest.raises(OutOfTime, match="its 3 fits would take about"):
        SklearnMember("gbm", (("max_iter", 20),)).fit(data, train, deadline=next(ticking) + 2)
    shortened = TorchMember(MLP.with_(epochs=40, patience=0, max_steps=0)).fit(data, train, valid_rows=valid,
                                                                                deadline=next(ticking) + 20)
    assert shortened.report.shortened.endswith("of 40 epochs")


def test_a_budget_gives_each_member_an_even_share_of_what_is_left(ticking):
    start = next(ticking)
    budget = Budget(start + 90)
    assert budget.share(3) - start == pytest.approx(90 / 3, abs=2)  # a third of what is left
    assert budget.left() == pytest.approx(90 - 4, abs=1)
    assert budget_module.part(None, 3) is None


def test_a_time_limited_cv_reports_its_limit_and_a_bad_limit_is_refused(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text("[toy]\nfolds = 3\n")
    code, out, err = run_cli(ws, capsys, "cv", "toy", "--json", "--time-limit", "10m")
    assert code == 0, err
    report = json.loads(out)
    assert report["time_limit"] == {"seconds": 600.0, "cut": [], "shortened": []}
    assert report["params"]["time_limit"] == 600.0
    assert [m["model"] for m in report["members"]] == ["mlp", "lightgbm", "glm"]
    code, out, err = run_cli(ws, capsys, "cv", "toy", "--time-limit", "soon")
    assert_one_line_error(code, err, "--time-limit 'soon': give seconds or a duration")
    assert code == 2


def test_seeds_auto_spends_a_time_limit_on_more_seeds_and_the_final_fit_takes_them(tmp_path, capsys):
    """seeds = "auto": one seed without a limit; under a limit that leaves room, more rounds of
    every member on the same folds from the next seeds (AUTO_SEEDS in all here: a tiny table),
    their out-of-fold predictions averaged; the report says how many, and the final fit trains
    that many seeds of each member. A bad seeds value is one line."""
    from pipeline.tabular.cv import AUTO_SEEDS
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text('[toy]\nfolds = 3\nseeds = "auto"\nensemble = [{model = "lightgbm"}]\n')
    code, out, err = run_cli(ws, capsys, "cv", "toy", "--json")
    assert code == 0, err
    once = json.loads(out)
    assert once["seeds"] == 1 and once["params"]["seeds"] == "auto"
    code, out, err = run_cli(ws, capsys, "cv", "toy", "--json", "--time-limit", "10m")
    assert code == 0, err
    spent = json.loads(out)
    assert spent["seeds"] == AUTO_SEEDS and spent["mean_valid"] != once["mean_valid"]  # the mean of 5 seeds
    assert f"each from {AUTO_SEEDS} seeds" in (ws / "reports" / "runs" / spent["run"] / "report.md").read_text()
    assert run_cli(ws, capsys, "train", "toy", "--time-limit", "10m")[0] == 0
    [trees] = torch.load(ws / "models" / "toy.pt", weights_only=True)["members"]
    assert len(trees["models"][0]) == AUTO_SEEDS  # one row set: every training row, its seeds' boosters
    (ws / "params.toml").write_text('[toy]\nseeds = "many"\n')
    code, _, err = run_cli(ws, capsys, "cv", "toy")
    assert_one_line_error(code, err, "seeds")
