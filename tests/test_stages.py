"""Stages end to end: every stage on a tiny declared target, up-to-date checks, status after
each kind of change, SIGKILL midway, lock contention, reports and plots."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import assert_one_line_error, cli, declare, files_under, make_competition, run_cli, statuses, \
    trust_model
from pipeline.tabular.members import SklearnMember
from test_members import data_for
from pipeline.targets import get_target
from pipeline.workspace import Workspace


def states(ws: Path, capsys, *flags: str) -> dict[str, str]:
    return statuses(ws, capsys, "toy", *flags)


@pytest.fixture()
def ws(tmp_path) -> Path:
    return make_competition(tmp_path / "ws")


def test_every_stage_runs_on_a_declared_target(ws, capsys):
    assert cli(ws, "run", "toy") == 0
    submission = pd.read_csv(ws / "submissions" / "toy.csv")
    assert list(submission.columns) == ["key", "price"]
    assert len(submission) == 120 and submission["price"].gt(0).all()
    assert (ws / "models" / "toy.pt").stat().st_size > 0
    run_dirs = list((ws / "reports" / "runs").iterdir())
    assert len(run_dirs) == 1
    report = json.loads((run_dirs[0] / "report.json").read_text())
    for key in ("metric", "params", "folds", "mean_valid", "std_valid", "seconds", "device"):
        assert key in report
    assert len(report["folds"]) == 5 and report["params"]["ensemble"][0]["epochs"] == 5  # params.toml's, in the MLP
    assert (run_dirs[0] / "curves.png").stat().st_size > 1000
    markdown = (run_dirs[0] / "report.md").read_text()
    assert "| fold | train | valid |" in markdown and "curves.png" in markdown
    assert set(states(ws, capsys).values()) == {"up to date"}


def test_second_run_skips_every_stage(ws, capsys):
    assert cli(ws, "run", "toy") == 0
    capsys.readouterr()
    lock_before = (ws / "pipeline.lock").read_text()
    assert cli(ws, "run", "toy") == 0
    err = capsys.readouterr().err
    assert err.count("up to date, skipped") == 5 and "running" not in err
    assert (ws / "pipeline.lock").read_text() == lock_before


def downstream_of(stages, name: str) -> set[str]:
    """The stages that depend on ``name``, directly or through others."""
    found = {name}
    for stage in stages:  # declared order: upstream first
        if found & set(stage.after):
            found.add(stage.name)
    return found - {name}


def test_status_after_param_change_marks_exactly_downstream(ws, capsys):
    assert cli(ws, "run", "toy") == 0
    stages = get_target("toy", Workspace(ws)).stages
    train = next(s for s in stages if s.name == "train")
    with open(ws / "params.toml", "a") as handle:
        handle.write("folds = 3\n")  # cv's param, and no other stage's
    st = states(ws, capsys)
    assert st["cv"] == "stale param folds changed: 5 -> 3"
    below = downstream_of(stages, "cv")
    for stage in stages:
        if stage.name not in below | {"cv"}:
            assert st[stage.name] == "up to date", stage.name
        elif stage.name in below:
            assert st[stage.name].startswith("stale upstream stage"), (stage.name, st[stage.name])

    (ws / "params.toml").write_text("[toy]\nepochs = 5\nlr = 0.07\nbatch_size = 32\n")
    st = states(ws, capsys)
    assert st["download"] == st["preprocess"] == "up to date"
    assert st["cv"] == "stale param ensemble.mlp.lr changed: 0.05 -> 0.07"  # the auto recipe's MLP
    assert st["train"] == ("stale upstream stage cv is not up to date" if "cv" in train.after
                           else "stale param ensemble.mlp.lr changed: 0.05 -> 0.07")
    assert st["submit"] == "stale upstream stage train is not up to date"

    st = states(ws, capsys, "--fit-on", "train")  # a flag overrides the params file
    assert "param fit_on changed" in st["preprocess"]
    assert all(st[s].startswith("stale") for s in ("cv", "train", "submit"))


def test_status_after_input_file_edit(ws, capsys):
    assert cli(ws, "run", "toy") == 0
    frame = pd.read_csv(ws / "train.csv")
    frame.loc[0, "area"] += 1
    frame.to_csv(ws / "train.csv", index=False)
    st = states(ws, capsys)
    assert st["download"].startswith("stale") and "train.csv" in st["download"]
    assert all(st[s].startswith("stale") for s in ("preprocess", "cv", "train", "submit"))
    capsys.readouterr()
    assert cli(ws, "run", "toy") == 0
    assert "preprocess: running" in capsys.readouterr().err
    assert set(states(ws, capsys).values()) == {"up to date"}


def test_deleted_output_is_missing_and_rebuilt(ws, capsys):
    assert cli(ws, "run", "toy") == 0
    (ws / "models" / "toy.pt").unlink()
    st = states(ws, capsys)
    assert st["train"].startswith("missing")
    assert cli(ws, "run", "toy") == 0
    assert (ws / "models" / "toy.pt").exists()


def test_same_seed_same_report(ws, capsys):
    scores = []
    for _ in range(2):
        capsys.readouterr()
        assert cli(ws, "cv", "toy", "--json") == 0
        report = json.loads(capsys.readouterr().out)
        scores.append([f["valid"] for f in report["folds"]])
    assert scores[0] == scores[1]
    capsys.readouterr()
    assert cli(ws, "cv", "toy", "--json", "--seed", "1", "--split", "shuffled") == 0
    assert [f["valid"] for f in json.loads(capsys.readouterr().out)["folds"]] != scores[0]


def _pipeline(ws: Path, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--workdir", str(ws), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_sigkill_midway_leaves_no_complete_output(ws, capsys):
    assert cli(ws, "run", "toy", "--until", "preprocess") == 0
    (ws / "params.toml").write_text("[toy]\nepochs = 100000\nbatch_size = 8\n")
    proc = _pipeline(ws, "cv", "toy")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any(line.startswith("cv: running") for line in lines):  # the cv stage's body started
        assert proc.poll() is None, lines
        assert time.monotonic() < deadline, f"cv never started: {lines}"
        time.sleep(0.05)
    time.sleep(1.5)  # into the epochs: 100000 of them take far longer than this
    assert proc.poll() is None, lines
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    reader.join(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert "cv: running (never run)" in "".join(lines) and "Traceback" not in "".join(lines)
    assert not list(ws.rglob("report.json"))
    assert states(ws, capsys)["cv"] == "missing never run"
    (ws / "params.toml").write_text("[toy]\nepochs = 3\n")
    assert cli(ws, "run", "toy", "--until", "cv") == 0  # the lock released with the process
    assert len(list((ws / "reports" / "runs").glob("*/report.json"))) == 1


def test_lock_contention_refuses_then_waits(ws, capsys):
    workspace = Workspace.resolve(ws)
    with workspace.exclusive():
        proc = _pipeline(ws, "run", "toy", "--until", "download")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 5  # the workspace is locked
        assert "busy" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        waiting = _pipeline(ws, "--wait", "30", "run", "toy", "--until", "download")
        time.sleep(1.5)
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert json.loads((ws / "pipeline.lock").read_text())["toy"]["download"]["outs"]


def linear_competition(root: Path, last_x: float) -> Path:
    """y = 100 + 10 x on x = 1..40, fit by a ridge on y itself; the test's last row (id 103) is at
    ``last_x``."""
    ws = root / "ws"
    ws.mkdir()
    x = np.arange(1, 41)
    pd.DataFrame({"id": x, "x": x * 1.0, "y": 100 + 10 * x}).to_csv(ws / "train.csv", index=False)
    pd.DataFrame({"id": [101, 102, 103], "x": [5.0, 20.0, last_x]}).to_csv(ws / "test.csv", index=False)
    (ws / "pipeline.toml").write_text(declare("lin", train="train.csv", test="test.csv", id="id", label="y",
                                              task="regression", metric="log_rmse"))
    (ws / "params.toml").write_text('[lin]\nensemble = [{model = "ridge", alpha = 1e-6, log_target = false}]\n')
    return ws


def test_submission_written_only_after_checks(tmp_path, capsys):
    """A submission that fails its checks is written nowhere, neither in submissions/ nor at
    --out, and the earlier submission stays byte for byte as it was."""
    ws = linear_competition(tmp_path, last_x=30.0)
    mine = ws / "mine.csv"
    assert cli(ws, "submit", "lin", "--out", str(mine)) == 0
    written = ws / "submissions" / "lin.csv"
    assert mine.read_bytes() == written.read_bytes()
    frame = pd.read_csv(written)
    assert frame["id"].tolist() == [101, 102, 103]
    np.testing.assert_allclose(frame["y"], [150, 300, 400], rtol=1e-4)  # the ridge fits y exactly
    before = written.read_bytes()

    # A model whose predictions are NaN, loaded as a valid checkpoint (its lock record matches,
    # as when models/ is copied from another machine): submit must refuse to write.
    model = ws / "models" / "lin.pt"
    state = torch.load(model, weights_only=True)
    state["members"][0]["transform"]["scale"][0] = float("nan")  # the ridge's way back to the labels
    torch.save(state, model)
    trust_model(ws, "lin", "models/lin.pt")
    other = ws / "other.csv"
    code, _, err = run_cli(ws, capsys, "submit", "lin", "--out", str(other))
    assert code == 1
    assert_one_line_error(code, err, "3 predictions are not finite (first: id 101)", "nothing was written")
    assert "train: up to date, skipped" in err  # the doctored model was really the one used
    assert written.read_bytes() == before and mine.read_bytes() == before
    assert not other.exists()
    assert [p.name for p in files_under(ws / "submissions")] == ["lin.csv"]
    assert not list(ws.rglob("*.part"))


def test_negative_prediction_under_a_log_metric_is_refused_not_clamped(tmp_path, capsys):
    """A blend averages in the metric's space, log(max(p, 1)) for log_rmse: a member's -9900 must
    be refused, not written as exp(log 1) = 1.0 (as at 1e21bc3). (scikit-learn members keep their
    predictions inside the training labels' range; d2l's torch linear model does not.)"""
    ws = linear_competition(tmp_path, last_x=-1000.0)  # the model extrapolates to 100 + 10 * -1000 < 0
    (ws / "params.toml").write_text('[lin]\nmodel = "linear"\nlog_target = false\nlr = 0.5\nepochs = 200\n'
                                    'batch_size = 8\n')
    other = ws / "other.csv"
    code, _, err = run_cli(ws, capsys, "submit", "lin", "--out", str(other))
    assert not (ws / "submissions" / "lin.csv").exists() and not other.exists(), \
        pd.read_csv(ws / "submissions" / "lin.csv").to_dict("list")
    assert code == 3  # refused when the model was trained
    assert_one_line_error(code, err, "not positive")


D2L_FLAGS = ("--model", "linear", "--folds", "5", "--split", "contiguous", "--epochs", "100", "--lr", "5",
             "--weight-decay", "0", "--batch-size", "64", "--no-log-target", "--log-skewed", "0")


def test_house_d2l_recipe_matches_the_book(shared_datasets, tmp_path, capsys):
    """d2l 4.10's settings give mean valid log-RMSE in 0.15-0.19 (the anchor script: ~0.17)."""
    ws = tmp_path / "house"
    code = cli(ws, "--mirror", str(shared_datasets), "cv", "house", *D2L_FLAGS, "--json")
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.15 <= report["mean_valid"] <= 0.19
    features = torch.load(ws / "data" / "house" / "features.pt", weights_only=True)
    assert features["X"].shape == (1460, 330) and features["X_test"].shape == (1459, 330)
    # The same flags: submit reuses the features (and whatever else is up to date) and trains d2l's model.
    assert cli(ws, "submit", "house", *D2L_FLAGS, "--out", str(tmp_path / "s.csv")) == 0
    assert "preprocess: up to date, skipped" in capsys.readouterr().err
    submission = pd.read_csv(tmp_path / "s.csv")
    assert list(submission.columns) == ["Id", "SalePrice"] and len(submission) == 1459
    assert submission["Id"].is_unique and np.isfinite(submission["SalePrice"]).all()


def test_ensemble_recipe_blends_members_in_cv_and_submission(ws, capsys):
    """A Lasso (scikit-learn) and a torch linear model, each fit inside the folds, then blended."""
    (ws / "params.toml").write_text(
        '[toy]\nepochs = 20\nlr = 0.05\nbatch_size = 32\nlog_target = true\nblend = "mean"\n'
        'ensemble = [{model = "lasso", alpha = 0.001}, {model = "linear"}]\n')
    capsys.readouterr()
    assert cli(ws, "cv", "toy", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in report["members"]] == ["lasso", "linear"]
    # Equal weights in log space: per fold the blend's errors are the mean of the members' errors,
    # so its log-RMSE is at most the mean of theirs (triangle inequality), and differs from each.
    members = np.array([m["valid"] for m in report["members"]])  # (members, folds)
    weights = np.array([m.get("weight", 0.5) for m in report["members"]])
    np.testing.assert_allclose(weights, [0.5, 0.5])
    blend = np.array([f["valid"] for f in report["folds"]])
    assert members.shape == (2, 5) and np.isfinite(blend).all() and np.isfinite(members).all()
    assert (blend <= weights @ members + 1e-6).all(), (blend, members)
    assert (np.abs(blend - members) > 1e-6).all(), (blend, members)
    assert report["mean_valid"] == pytest.approx(blend.mean())
    assert cli(ws, "submit", "toy") == 0
    state = torch.load(ws / "models" / "toy.pt", weights_only=True)
    assert [m["family"] for m in state["members"]] == ["lasso", "linear"]
    submission = pd.read_csv(ws / "submissions" / "toy.csv")
    assert len(submission) == 120 and submission["price"].gt(0).all()


def test_sklearn_member_averages_its_seeds_in_log_space():
    """`seeds` refits a member that has a random_state from consecutive states and averages the
    log predictions; a deterministic member (no random_state) is fit once."""
    data = data_for("regression")
    rows = [torch.arange(len(data.y))]

    def predicted(member, seeds=1):
        return member.fit(data, rows, seeds=seeds).predict(data.train)[0, :, 0].double().numpy()

    options = (("max_features", 0.5), ("max_iter", 20))
    fits = [predicted(SklearnMember("gbm", options + (("random_state", s),))) for s in (3, 4)]
    assert not np.allclose(*fits)  # feature subsampling makes the seeds differ
    blended = predicted(SklearnMember("gbm", options + (("random_state", 3),)), seeds=2)
    np.testing.assert_allclose(blended, np.exp(np.log(fits).mean(0)), rtol=1e-6)
    lasso = SklearnMember("lasso", (("alpha", 0.01),))
    np.testing.assert_array_equal(predicted(lasso, seeds=3), predicted(lasso))
