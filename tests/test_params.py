"""Params: the grid parser, `pipeline sweep` (ranking, --save/--no-save) and params.toml written
with tomlkit so that a sweep changes the swept values and nothing else (issue 13, item 4)."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

from helpers import assert_one_line_error, make_competition, run_cli
from pipeline.errors import UsageError
from pipeline.params import expand_grid, parse_grid
from pipeline.tabular.trainer import TrainParams

DEFAULTS, SWEEPABLE = TrainParams().to_dict(), list(TrainParams.__dataclass_fields__)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

GRID = ["--grid", "lr=0.01,0.1", "--grid", "weight-decay=0,0.1"]


# ----------------------------------------------------------------------------- the grid parser


def test_grid_values_are_typed_by_the_params_defaults():
    grid = parse_grid(["lr=0.01,0.1", "epochs=3,5", "log-target=true,no", "hidden=8,16x8", "weight-decay=0,1e-4",
                       "model=linear,mlp", "dropout=0.5"], DEFAULTS, SWEEPABLE)
    assert grid == {"lr": [0.01, 0.1], "epochs": [3, 5], "log_target": [True, False], "hidden": [[8], [16, 8]],
                    "weight_decay": [0.0, 1e-4], "model": ["linear", "mlp"], "dropout": [0.5]}
    assert all(type(v) is float for v in grid["lr"] + grid["weight_decay"] + grid["dropout"])
    assert all(type(v) is int for v in grid["epochs"] + grid["hidden"][0] + grid["hidden"][1])
    assert all(type(v) is bool for v in grid["log_target"])
    assert list(grid) == ["lr", "epochs", "log_target", "hidden", "weight_decay", "model", "dropout"]
    for yes, no in (("1", "0"), ("TRUE", "False"), ("yes", "NO")):
        assert parse_grid([f"log_target={yes},{no}"], DEFAULTS, SWEEPABLE) == {"log_target": [True, False]}


def test_expand_grid_is_the_product_in_grid_order():
    assert expand_grid({"lr": [0.1, 0.2], "hidden": [[8], [16, 8]]}) == [
        {"lr": 0.1, "hidden": [8]}, {"lr": 0.1, "hidden": [16, 8]},
        {"lr": 0.2, "hidden": [8]}, {"lr": 0.2, "hidden": [16, 8]}]


@pytest.mark.parametrize("item, needles", [
    ("lr", ("grid 'lr': write NAME=V1,V2",)),
    ("lr=", ("grid 'lr=': write NAME=V1,V2",)),
    ("depth=1,2", ("grid 'depth=1,2': unknown param 'depth'", "sweepable:", "weight_decay")),
    ("folds=2,3", ("unknown param 'folds'",)),  # a CV setting, not a model's
    ("lr=0.1,fast", ("grid 'lr=0.1,fast': 'fast' is not a valid lr",)),
    ("epochs=2.5", ("'2.5' is not a valid epochs",)),
    ("log-target=maybe", ("'maybe' is not a valid log_target",)),
    ("hidden=8,16x", ("'16x' is not a valid hidden",)),
])
def test_bad_grid_is_a_one_line_usage_error_before_any_work(tmp_path, capsys, item, needles):
    with pytest.raises(UsageError) as caught:
        parse_grid([item], DEFAULTS, SWEEPABLE)
    assert "\n" not in str(caught.value)
    ws = make_competition(tmp_path / "ws")
    code, out, err = run_cli(ws, capsys, "sweep", "toy", "--grid", item)
    assert code == 2 and out == ""
    assert_one_line_error(code, err, *needles)
    assert not (ws / "data").exists() and not (ws / "reports").exists()


# ----------------------------------------------------------------------------- sweep


def test_sweep_ranks_every_config_and_saves_only_when_asked(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    params = (ws / "params.toml").read_bytes()
    code, out, err = run_cli(ws, capsys, "sweep", "toy", *GRID, "--no-save", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["metric"] == "log_rmse" and report["grid"] == ["lr", "weight_decay"] and report["folds"] == 5
    board = report["leaderboard"]
    assert len(board) == 4
    assert sorted((row["params"]["lr"], row["params"]["weight_decay"]) for row in board) == \
        [(0.01, 0.0), (0.01, 0.1), (0.1, 0.0), (0.1, 0.1)]
    scores = [row["mean_valid"] for row in board]
    assert scores == sorted(scores) and len(set(scores)) == 4  # an error metric: lowest first
    for row in board:
        assert len(row["valid"]) == 5 and row["mean_valid"] == pytest.approx(np.mean(row["valid"]))
        assert row["params"]["epochs"] == 5 and row["params"]["batch_size"] == 32  # the rest from params.toml
    assert report["best_mean_valid"] == scores[0] and "saved" not in report
    assert (ws / "params.toml").read_bytes() == params
    runs = sorted((ws / "reports" / "runs").glob("toy-sweep-*/report.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["leaderboard"] == board

    code, out, err = run_cli(ws, capsys, "sweep", "toy", *GRID, "--save", "--json")
    assert code == 0, err
    saved = json.loads(out)
    best = saved["leaderboard"][0]["params"]
    assert [r["mean_valid"] for r in saved["leaderboard"]] == scores  # the same seed: the same sweep
    assert saved["saved"] == str(ws / "params.toml")
    stored = tomllib.loads((ws / "params.toml").read_text())["toy"]
    assert stored == {"epochs": 5, "lr": best["lr"], "batch_size": 32, "weight_decay": best["weight_decay"]}


def test_sweep_saves_by_default_and_says_so(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    code, out, err = run_cli(ws, capsys, "sweep", "toy", "--grid", "lr=0.01,0.1", "--epochs", "2")
    assert code == 0, err
    lines = out.strip().splitlines()
    board = lines[lines.index("Leaderboard:") + 1:][:3]
    assert board[0].split() == ["rank", "lr", "mean", "valid", "std"] and [r.split()[0] for r in board[1:]] == ["1", "2"]
    assert lines[-2].startswith("2 configs x 5 folds") and lines[-1] == f"best config saved to {ws / 'params.toml'}"
    best = float(board[1].split()[1])
    assert tomllib.loads((ws / "params.toml").read_text())["toy"]["lr"] == best


# ----------------------------------------------------------------------------- tomlkit keeps the file


PARAMS_TOML = """\
# Params for this workspace, kept by hand.
[toy]  # the toy competition
epochs = 5  # few epochs: a test
lr = 0.05
weight_decay = 0.0001  # swept below
batch_size = 32
# two members, blended
ensemble = [{model = "lasso", alpha = 0.001}, {model = "linear"}]

# not a target of this workspace
[other]
x = 1  # inline
name = "kept"
"""


def test_sweep_save_changes_the_swept_values_and_nothing_else(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text(PARAMS_TOML)
    before = tomllib.loads(PARAMS_TOML)
    code, out, err = run_cli(ws, capsys, "sweep", "toy", "--grid", "lr=0.01,0.1", "--grid", "weight-decay=0,0.001",
                             "--json")
    assert code == 0, err
    best = json.loads(out)["leaderboard"][0]["params"]
    written = (ws / "params.toml").read_text()
    after = tomllib.loads(written)
    assert after["toy"]["lr"] == best["lr"] and after["toy"]["weight_decay"] == best["weight_decay"]
    assert after["toy"]["ensemble"] == before["toy"]["ensemble"]
    assert after["other"] == before["other"]
    assert {k: v for k, v in after["toy"].items() if k not in ("lr", "weight_decay")} == \
        {k: v for k, v in before["toy"].items() if k not in ("lr", "weight_decay")}
    # Byte for byte: only the two values changed; every comment, order and spacing is as written.
    expected = re.sub(r"(?m)^lr = 0\.05$", f"lr = {best['lr']}", PARAMS_TOML)
    expected = re.sub(r"(?m)^weight_decay = 0\.0001", f"weight_decay = {best['weight_decay']}", expected)
    assert written == expected


def test_sweep_save_of_a_new_key_keeps_the_next_tables_comment_above_it(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text("[toy]\nepochs = 5\n\n# about other\n[other]\nx = 1\n")
    code, _, err = run_cli(ws, capsys, "sweep", "toy", "--grid", "lr=0.01,0.1", "--json")
    assert code == 0, err
    written = (ws / "params.toml").read_text()
    assert "lr = " in written.split("# about other")[0] and "# about other\n[other]" in written, written


def test_params_toml_that_is_not_toml_is_refused_before_it_is_touched(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text("[toy\nlr = 0.1\n")
    code, _, err = run_cli(ws, capsys, "sweep", "toy", "--grid", "lr=0.01,0.1")
    assert code == 2  # a settings file's mistake, like a flag's
    assert_one_line_error(code, err, "params.toml: not valid TOML")
    assert (ws / "params.toml").read_text() == "[toy\nlr = 0.1\n"
