"""Stages end to end: every stage on a tiny declared target, up-to-date checks, status after
each kind of change, SIGKILL midway, lock contention, reports and plots."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.cli import main
from pipeline.tabular.members import SklearnMember
from pipeline.workspace import Workspace


def make_competition(root: Path, rows: int = 240, seed: int = 0, name: str = "toy") -> Path:
    """A small regression competition: numeric and categorical features, NaNs, a positive label."""
    rng = np.random.default_rng(seed)
    n = rows + rows // 2
    frame = pd.DataFrame({
        "key": np.arange(1000, 1000 + n),
        "area": rng.gamma(4.0, 300.0, n),
        "rooms": rng.integers(1, 8, n).astype(float),
        "zone": rng.choice(["A", "B", "C", None], n),
        "age": rng.uniform(0, 80, n),
    })
    frame.loc[rng.random(n) < 0.1, "rooms"] = np.nan
    price = 50_000 + 120 * frame["area"] + 9_000 * frame["rooms"].fillna(3) - 400 * frame["age"]
    price += frame["zone"].map({"A": 30_000, "B": 0, "C": -15_000}).fillna(5_000)
    frame["price"] = (price * rng.lognormal(0, 0.05, n)).round(2)
    root.mkdir(parents=True, exist_ok=True)
    frame.iloc[:rows].to_csv(root / "train.csv", index=False)
    frame.iloc[rows:].drop(columns=["price"]).to_csv(root / "test.csv", index=False)
    (root / "pipeline.toml").write_text(
        f'[target.{name}]\ntrain = "train.csv"\ntest = "test.csv"\nid = "key"\nlabel = "price"\n'
        'task = "regression"\nmetric = "log_rmse"\n')
    (root / "params.toml").write_text(f"[{name}]\nepochs = 5\nlr = 0.05\nbatch_size = 32\n")
    return root


def cli(ws: Path, *args: str) -> int:
    try:
        main(["--workdir", str(ws), *args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def states(ws: Path, capsys, *flags: str) -> dict[str, str]:
    capsys.readouterr()
    assert cli(ws, "status", "toy", *flags) == 0
    lines = capsys.readouterr().out.strip().splitlines()[1:]
    return {line.split()[0]: " ".join(line.split()[1:]) for line in lines}


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
    assert len(report["folds"]) == 5 and report["params"]["epochs"] == 5
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


def test_status_after_param_change_marks_exactly_downstream(ws, capsys):
    assert cli(ws, "run", "toy") == 0
    with open(ws / "params.toml", "a") as handle:
        handle.write("folds = 3\n")
    st = states(ws, capsys)
    assert st["download"] == st["preprocess"] == st["train"] == st["submit"] == "up to date"
    assert st["cv"].startswith("stale") and "param folds changed" in st["cv"]

    (ws / "params.toml").write_text("[toy]\nepochs = 5\nlr = 0.07\nbatch_size = 32\n")
    st = states(ws, capsys)
    assert st["download"] == st["preprocess"] == "up to date"
    assert "param lr changed" in st["cv"] and "param lr changed" in st["train"]
    assert "upstream stage train" in st["submit"]

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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until training has started
        time.sleep(0.2)
        if proc.poll() is not None or (ws / ".pipeline.run.lock").exists() and \
                "pid" in (ws / ".pipeline.run.lock").read_text():
            break
    time.sleep(1.0)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    reports_dir = ws / "reports" / "runs"
    assert not list(reports_dir.glob("*/report.json")) if reports_dir.exists() else True
    assert states(ws, capsys)["cv"].startswith("missing")
    (ws / "params.toml").write_text("[toy]\nepochs = 3\n")
    assert cli(ws, "run", "toy", "--until", "cv") == 0  # the lock released with the process
    assert len(list(reports_dir.glob("*/report.json"))) == 1


def test_lock_contention_refuses_then_waits(ws, capsys):
    workspace = Workspace.resolve(ws)
    with workspace.exclusive():
        proc = _pipeline(ws, "run", "toy", "--until", "download")
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1
        assert "busy" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        waiting = _pipeline(ws, "--wait", "30", "run", "toy", "--until", "download")
        time.sleep(1.5)
    _, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert json.loads((ws / "pipeline.lock").read_text())["toy"]["download"]["outs"]


def test_submission_written_only_after_checks(ws, capsys):
    assert cli(ws, "submit", "toy", "--out", str(ws / "mine.csv")) == 0
    assert pd.read_csv(ws / "mine.csv").equals(pd.read_csv(ws / "submissions" / "toy.csv"))
    assert not list(ws.rglob("*.part"))


def test_house_d2l_recipe_matches_the_book(shared_datasets, tmp_path, capsys):
    """d2l 4.10's settings give mean valid log-RMSE in 0.15-0.19 (the anchor script: ~0.17)."""
    ws = tmp_path / "house"
    code = cli(ws, "--mirror", str(shared_datasets), "cv", "house", "--model", "linear", "--folds", "5",
               "--split", "contiguous", "--epochs", "100", "--lr", "5", "--weight-decay", "0",
               "--batch-size", "64", "--no-log-target", "--log-skewed", "0", "--json")
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.15 <= report["mean_valid"] <= 0.19
    features = torch.load(ws / "data" / "house" / "features.pt", weights_only=True)
    assert features["X"].shape == (1460, 330) and features["X_test"].shape == (1459, 330)
    assert cli(ws, "submit", "house", "--out", str(tmp_path / "s.csv")) == 0
    submission = pd.read_csv(tmp_path / "s.csv")
    assert list(submission.columns) == ["Id", "SalePrice"] and len(submission) == 1459
    assert submission["Id"].is_unique and np.isfinite(submission["SalePrice"]).all()


def test_ensemble_recipe_blends_members_in_cv_and_submission(ws, capsys):
    """A Lasso (scikit-learn) and a torch linear model, each fit inside the folds, then blended."""
    (ws / "params.toml").write_text(
        '[toy]\nepochs = 20\nlr = 0.05\nbatch_size = 32\nlog_target = true\n'
        'ensemble = [{model = "lasso", alpha = 0.001}, {model = "linear"}]\n')
    capsys.readouterr()
    assert cli(ws, "cv", "toy", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["model"] for m in report["members"]] == ["lasso", "linear"]
    blend, members = report["mean_valid"], [m["mean_valid"] for m in report["members"]]
    assert np.isfinite(blend) and blend <= max(members) + 1e-9
    assert cli(ws, "submit", "toy") == 0
    state = torch.load(ws / "models" / "toy.pt", weights_only=True)
    assert len(state["members"]) == 2 and "test_predictions" in state["members"][0]
    submission = pd.read_csv(ws / "submissions" / "toy.csv")
    assert len(submission) == 120 and submission["price"].gt(0).all()


def test_sklearn_member_averages_its_seeds_in_log_space():
    """`seeds` refits a member that has a random_state from consecutive states and averages the
    log predictions; a deterministic member (no random_state) is fit once."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5))
    y = np.exp(1 + X[:, 0] + 0.1 * rng.normal(size=80))
    options = (("max_features", 0.5), ("max_iter", 20))
    fits = [SklearnMember("gbm", options + (("random_state", s),)).fit_predict(X, y, X) for s in (3, 4)]
    assert not np.allclose(*fits)  # feature subsampling makes the seeds differ
    blended = SklearnMember("gbm", options + (("random_state", 3),)).fit_predict(X, y, X, seeds=2)
    np.testing.assert_allclose(blended, np.exp(np.log(fits).mean(0)), rtol=1e-12)
    lasso = SklearnMember("lasso", (("alpha", 0.01),))
    np.testing.assert_array_equal(lasso.fit_predict(X, y, X, seeds=3), lasso.fit_predict(X, y, X))
