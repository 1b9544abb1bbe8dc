"""The ``pipeline`` command itself: $PIPELINE_MIRROR (issue 13, item 5), hub / download / runs,
--debug and exit codes, and refused params shown as the flag the user typed (item 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from helpers import (assert_one_line_error, base_train_lines, files_under, make_competition, run_cli, table_rows,
                     text, workspace)
from pipeline.api import Pipeline
from pipeline.cli import main
from pipeline.errors import DataError, ParamError, UsageError
from pipeline.hub import DATA_HUB, GROUPS, verify
from pipeline.workspace import mirrors_from_env

# ----------------------------------------------------------------------------- $PIPELINE_MIRROR


def test_mirrors_from_env_keeps_urls_colons(monkeypatch):
    monkeypatch.setenv("PIPELINE_MIRROR", "http://127.0.0.1:8000/:../x:file:///y")
    assert mirrors_from_env() == ["http://127.0.0.1:8000/", "../x", "file:///y"]
    monkeypatch.setenv("PIPELINE_MIRROR", "/data/a:https://example.org:8443/base/::/data/b")
    assert mirrors_from_env() == ["/data/a", "https://example.org:8443/base/", "/data/b"]
    monkeypatch.setenv("PIPELINE_MIRROR", "")
    assert mirrors_from_env() == []
    monkeypatch.delenv("PIPELINE_MIRROR")
    assert mirrors_from_env() == []


def test_mirrors_from_env_splits_before_a_folder_starting_with_a_digit(monkeypatch):
    monkeypatch.setenv("PIPELINE_MIRROR", "../mirror:2024/datasets:http://host/base:2025")
    assert mirrors_from_env() == ["../mirror", "2024/datasets", "http://host/base", "2025"]


def test_flag_mirrors_come_before_env_mirrors(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPELINE_MIRROR", "http://127.0.0.1:8000/:../x")
    assert Pipeline(tmp_path, mirrors=["/m"]).mirrors == ["/m", "http://127.0.0.1:8000/", "../x"]


def test_pipeline_mirror_env_with_an_http_mirror(shared_datasets, server, tmp_path, monkeypatch, capsys):
    """An HTTP mirror with a port in $PIPELINE_MIRROR (then a missing folder): `pipeline download
    all` fills data/ with one request per file; a second run makes no request at all."""
    server.root = shared_datasets
    monkeypatch.setenv("PIPELINE_MIRROR", f"{server.url()}:{tmp_path / 'absent'}")
    ws = tmp_path / "ws"
    code, out, err = run_cli(ws, capsys, "download", "all")
    assert code == 0, err
    expected = [ws / "data" / entry.path for entry in DATA_HUB.values()]
    assert [Path(line) for line in out.split()] == expected
    assert files_under(ws / "data") == sorted(expected)
    assert all(verify(name, ws / "data" / entry.path) for name, entry in DATA_HUB.items())
    assert {p.name for p in expected} >= {"kaggle_house_pred_train.csv", "kaggle_house_pred_test.csv",
                                          "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}
    assert server.counts == Counter({entry.path: 1 for entry in DATA_HUB.values()})
    code, out, err = run_cli(ws, capsys, "download", "all")
    assert code == 0 and [Path(line) for line in out.split()] == expected
    assert sum(server.counts.values()) == 6


def test_pipeline_mirror_env_with_a_local_folder(shared_datasets, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_MIRROR", f"{tmp_path / 'absent'}:{shared_datasets}")
    ws = tmp_path / "ws"
    code, out, err = run_cli(ws, capsys, "download", "house")
    assert code == 0, err
    assert out.split() == ["data/kaggle_house_pred_train.csv", "data/kaggle_house_pred_test.csv"]
    for name in GROUPS["house"]:
        assert verify(name, ws / "data" / DATA_HUB[name].path)
        assert (ws / "data" / DATA_HUB[name].path).read_bytes() == (shared_datasets / DATA_HUB[name].path).read_bytes()


# ----------------------------------------------------------------------------- hub, download, runs


def hub_rows(out: str) -> dict[str, tuple[str, str, str]]:
    lines = out.strip().splitlines()
    assert lines[0].split() == ["name", "cached", "verified", "url"]
    return {name: (cached, verified, url) for name, cached, verified, url in (line.split() for line in lines[1:])}


def test_hub_lists_the_six_datasets_and_shows_what_is_cached(shared_datasets, tmp_path, capsys):
    ws = tmp_path / "ws"
    code, out, _ = run_cli(ws, capsys, "hub")
    rows = hub_rows(out)
    assert code == 0 and list(rows) == list(DATA_HUB)
    assert rows == {name: ("False", "False", entry.url) for name, entry in DATA_HUB.items()}

    code, out, err = run_cli(ws, capsys, "--mirror", str(shared_datasets), "download", "house")
    assert code == 0, err
    assert out.split() == ["data/kaggle_house_pred_train.csv", "data/kaggle_house_pred_test.csv"]
    rows = hub_rows(run_cli(ws, capsys, "hub")[1])
    assert {name: row[:2] for name, row in rows.items()} == {
        name: ("True", "True") if name in GROUPS["house"] else ("False", "False") for name in DATA_HUB}

    with open(ws / "data" / "kaggle_house_pred_test.csv", "ab") as handle:
        handle.write(b"1,2,3\n")
    rows = hub_rows(run_cli(ws, capsys, "hub")[1])
    assert rows["kaggle_house_test"][:2] == ("True", "False")
    assert rows["kaggle_house_train"][:2] == ("True", "True")

    code, out, _ = run_cli(ws, capsys, "--mirror", str(shared_datasets), "download", "kaggle_house_test")
    assert code == 0 and out.split() == [str(ws / "data" / "kaggle_house_pred_test.csv")]
    assert hub_rows(run_cli(ws, capsys, "hub")[1])["kaggle_house_test"][:2] == ("True", "True")


def test_runs_lists_each_run_best_first(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    code, out, _ = run_cli(ws, capsys, "runs")
    assert code == 0 and out.strip() == "no runs yet: try `pipeline cv toy`"  # the workspace's own target
    code, out, _ = run_cli(ws, capsys, "runs", "--json")
    assert code == 0 and json.loads(out) == []

    reports = []
    for lr in ("0.05", "0.0001"):
        code, out, err = run_cli(ws, capsys, "cv", "toy", "--epochs", "3", "--lr", lr, "--json")
        assert code == 0, err
        reports.append(json.loads(out))
    code, out, _ = run_cli(ws, capsys, "runs", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2
    assert sorted(row["run"] for row in rows) == sorted(r["run"] for r in reports)
    by_run = {row["run"]: row for row in rows}
    for report in reports:
        row = by_run[report["run"]]
        assert (row["target"], row["command"], row["metric"]) == ("toy", "cv", "log_rmse")
        assert row["score"] == report["mean_valid"] and row["model"] == "auto"  # the declared target's recipe
    assert [row["score"] for row in rows] == sorted(r["mean_valid"] for r in reports)  # log-RMSE: lowest first

    code, out, _ = run_cli(ws, capsys, "runs")
    lines = out.strip().splitlines()
    assert lines[0].split() == ["best", "target", "command", "metric", "score", "model", "seconds", "device", "run"]
    assert [line.split()[-1] for line in lines[1:]] == [row["run"] for row in rows]
    assert [line.split()[0] for line in lines[1:]] == ["*", "toy"]  # the best run of the target is marked
    assert all(line.split()[-8:-5] == ["toy", "cv", "log_rmse"] for line in lines[1:])
    code, out, _ = run_cli(ws, capsys, "runs", "--target", "house")
    assert out.strip() == "no runs yet: try `pipeline cv house`"


def test_run_takes_model_options_and_prints_the_score_and_where_things_went(tmp_path, capsys):
    """Issue 25: `pipeline run` printed nothing on stdout, and refused --model."""
    ws = make_competition(tmp_path / "ws")
    code, out, err = run_cli(ws, capsys, "run", "toy", "--model", "linear", "--epochs", "3", "--json")
    assert code == 0, err
    outcome = json.loads(out)
    report = json.loads(Path(outcome["report"]).with_name("report.json").read_text())
    assert report["params"]["model"] == "linear" and outcome["score"] == report["mean_valid"]
    assert outcome["metric"] == "log_rmse" and Path(outcome["submission"]) == ws / "submissions" / "toy.csv"
    assert Path(outcome["submission"]).exists()
    code, out, _ = run_cli(ws, capsys, "run", "toy", "--model", "linear", "--epochs", "3")  # all up to date
    printed = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert code == 0 and float(printed["score"]) == pytest.approx(outcome["score"], abs=1e-5)
    assert printed["submission"] == outcome["submission"] and printed["report"] == outcome["report"]


def test_submissions_obey_the_umask_and_a_missing_out_folder_is_announced(tmp_path, capsys, caplog):
    """Issue 25: submissions were written 0600 (unreadable by others on a shared machine), and
    --out created a missing folder without a word."""
    ws = make_competition(tmp_path / "ws")
    out = tmp_path / "missing" / "dir" / "s.csv"
    old = os.umask(0o022)
    try:
        code, _, err = run_cli(ws, capsys, "submit", "toy", "--model", "linear", "--epochs", "2", "--out", str(out))
    finally:
        os.umask(old)
    assert code == 0, err
    assert (ws / "submissions" / "toy.csv").stat().st_mode & 0o777 == 0o644
    assert out.stat().st_mode & 0o777 == 0o644
    assert f"creating the folder {out.parent} for s.csv" in caplog.text


# ----------------------------------------------------------------------------- --debug and exit codes


def test_debug_lets_the_real_exception_propagate(tmp_path, capsys):
    lines = base_train_lines()
    lines[3] = "3,61,b,cheap"
    ws = workspace(tmp_path, train=text(lines))
    with pytest.raises(UsageError, match="unknown target 'nope'"):
        main(["--debug", "--workdir", str(ws), "cv", "nope"])
    with pytest.raises(DataError, match="non-numeric 'cheap'"):
        main(["--debug", "--workdir", str(ws), "cv", "toy", "--epochs", "2"])
    code, _, err = run_cli(ws, capsys, "cv", "toy", "--epochs", "2")
    assert code == 1
    assert_one_line_error(code, err, "train.csv", "non-numeric 'cheap'", "line 4")


def test_debug_prints_a_traceback_in_a_real_process(tmp_path):
    """The console command with --debug (without it, test_robustness's subprocess test: one line)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE_HOME", "PIPELINE_MIRROR")}
    run = subprocess.run([sys.executable, "-m", "pipeline", "--debug", "--workdir", str(tmp_path), "cv", "nope"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.stderr.startswith("Traceback (most recent call last):")
    assert run.stderr.strip().splitlines()[-1] == ("pipeline.errors.UsageError: unknown target 'nope'; "
                                                   "choose from house, fashion (declare more in pipeline.toml)")
    assert run.returncode == 1 and run.stdout == ""  # an uncaught exception, as Python ends on one


@pytest.mark.parametrize("args, expected, needles", [
    (["cv", "toy", "--epochs", "2"], 0, ()),
    (["cv", "toys"], 2, ("unknown target 'toys'; choose from house, fashion, toy",)),
    (["cv", "toy", "--split", "sideways"], 2, ("--split 'sideways': not one of contiguous, shuffled, group, time for target toy",)),
    (["cv", "toy", "--folds", "1", "--epochs", "2"], 2, ("--folds 1: need between 2 and 12",)),
    (["cv", "toy", "--folds", "20", "--epochs", "2"], 2, ("--folds 20: need between 2 and 12",)),
    (["cv", "toy", "--lr", "1e30", "--epochs", "3"], 3, ()),
    (["run", "toy", "--until", "deploy"], 2, ("target toy has no stage 'deploy'",)),
], ids=["ok", "unknown-target", "bad-split", "folds-1", "folds-20", "diverged", "unknown-stage"])
def test_exit_codes(tmp_path, capsys, args, expected, needles):
    ws = workspace(tmp_path)
    code, out, err = run_cli(ws, capsys, *args)
    assert code == expected, err
    if expected == 0:
        assert "mean valid" in out
    elif expected == 3:
        assert "diverged at epoch" in out and "Traceback" not in err
    else:
        assert_one_line_error(code, err, *needles)


def test_exit_code_1_for_a_bad_csv(tmp_path, capsys):
    ws = workspace(tmp_path, test="")
    code, _, err = run_cli(ws, capsys, "cv", "toy")
    assert code == 1
    assert_one_line_error(code, err, "test.csv is empty")


@pytest.mark.parametrize("args, needle", [
    (["cv", "toy", "--colour", "red"], "No such option '--colour'"),
    (["cv", "toy", "--epochs", "many"], "'many' is not a valid integer"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_click_usage_errors_exit_2(tmp_path, capsys, args, needle):
    code, _, err = run_cli(workspace(tmp_path), capsys, *args)
    assert code == 2 and needle in err and "Traceback" not in err


# ----------------------------------------------------------------------------- params named as flags (item 8)


def test_param_error_names_the_param_in_the_library_and_the_flag_in_the_cli(tmp_path, capsys):
    ws = workspace(tmp_path)
    with pytest.raises(ParamError) as caught:
        Pipeline(ws).cv("toy", folds=1, epochs=2)
    assert str(caught.value) == "folds = 1: need between 2 and 12 (the number of training rows)"
    assert (caught.value.param, caught.value.value, caught.value.exit_code) == ("folds", 1, 2)
    code, _, err = run_cli(ws, capsys, "cv", "toy", "--folds", "1", "--epochs", "2")
    line = assert_one_line_error(code, err)
    assert code == 2 and line == "pipeline: error: --folds 1: need between 2 and 12 (the number of training rows)"

    with pytest.raises(ParamError, match=r"^weight_decay = -1\.0: must be at least 0$"):
        Pipeline(ws).cv("toy", weight_decay=-1.0, epochs=2)
    code, _, err = run_cli(ws, capsys, "cv", "toy", "--weight-decay", "-1", "--epochs", "2")
    assert code == 2
    assert assert_one_line_error(code, err) == "pipeline: error: --weight-decay -1.0: must be at least 0"


@pytest.mark.parametrize("command", [["cv", "toy"], ["train", "toy"], ["submit", "toy"],
                                     ["sweep", "toy", "--grid", "lr=0.1,0.2"]])
def test_sgd_is_refused_for_a_tabular_target_before_any_work(tmp_path, capsys, command):
    ws = workspace(tmp_path)
    code, out, err = run_cli(ws, capsys, *command, "--optimizer", "sgd")
    assert code == 2 and out == ""
    line = assert_one_line_error(code, err)
    assert line == "pipeline: error: --optimizer 'sgd': not one of adam, adamw for target toy"
    assert sorted(p.name for p in ws.iterdir()) == ["pipeline.toml", "test.csv", "train.csv"]  # nothing ran
    with pytest.raises(ParamError, match=r"^optimizer = 'sgd': not one of adam, adamw for target toy$"):
        Pipeline(ws).cv("toy", optimizer="sgd")


def test_fashion_accepts_sgd_and_refuses_an_unknown_optimizer(tmp_path, capsys):
    assert Pipeline(tmp_path).context("fashion", {"model": "softmax", "optimizer": "sgd"}).params["optimizer"] == "sgd"
    code, out, err = run_cli(tmp_path, capsys, "status", "fashion", "--model", "softmax", "--optimizer", "sgd")
    assert code == 0, err
    stages = ("download", "preprocess", "train", "evaluate", "submit")
    assert table_rows(out) == {stage: "missing never run" for stage in stages}
    code, _, err = run_cli(tmp_path, capsys, "status", "fashion", "--optimizer", "rmsprop")
    assert code == 2
    assert_one_line_error(code, err, "--optimizer 'rmsprop': not one of sgd, adam, adamw for target fashion")
