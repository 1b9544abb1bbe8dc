"""Reports that fit what ran (issue 15): the headline against the best earlier run, members,
folds, only the params that apply, the pictures that fit the task, a self-contained HTML page
that headless Chromium renders with its pictures, the leaderboard's best marks and run diffs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import cli, declare, make_competition, run_cli

SKLEARN_ONLY = '[toy]\nensemble = [{model = "lasso", alpha = 0.001}, {model = "glm"}]\nblend = "greedy"\n'


def cv_report(ws: Path, capsys, *flags: str) -> dict:
    capsys.readouterr()
    assert cli(ws, "cv", "toy", "--json", *flags) == 0
    return json.loads(capsys.readouterr().out)


def run_dir(ws: Path, report: dict) -> Path:
    return ws / "reports" / "runs" / report["run"]


def classification_competition(root: Path, classes: int) -> Path:
    rng = np.random.default_rng(3)
    n = 300
    x = rng.normal(size=(n, 3))
    labels = np.array(list("abc"[:classes]))[(x[:, 0] * 1.5 + rng.normal(0, 0.6, n)).argsort().argsort()
                                              * classes // n]
    frame = pd.DataFrame({"id": np.arange(n), "x0": x[:, 0], "x1": x[:, 1], "kind": rng.choice(["u", "v"], n),
                          "y": labels})
    root.mkdir(parents=True)
    frame.iloc[:240].to_csv(root / "train.csv", index=False)
    frame.iloc[240:].drop(columns=["y"]).to_csv(root / "test.csv", index=False)
    metric = "auc" if classes == 2 else "logloss"
    (root / "pipeline.toml").write_text(declare("toy", train="train.csv", test="test.csv", id="id", label="y",
                                                task="classification", metric=metric))
    (root / "params.toml").write_text("[toy]\nepochs = 4\n")
    return root


def test_regression_report_has_members_folds_pictures_and_only_the_params_that_apply(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    (ws / "params.toml").write_text(SKLEARN_ONLY)
    report = cv_report(ws, capsys)
    assert [m["model"] for m in report["members"]] == ["lasso", "glm"]
    assert abs(sum(m["weight"] for m in report["members"]) - 1) < 1e-9
    assert all(len(m["valid"]) == 5 and m["seconds"] >= 0 for m in report["members"])
    # no member trains in epochs: no learning curves; a regression: predictions against truth
    assert report["plots"] == ["predictions.png"]
    assert (run_dir(ws, report) / "predictions.png").stat().st_size > 10_000
    # a Lasso and a linear model use no lr, epochs or hidden widths
    assert not {"lr", "epochs", "hidden", "model", "dropout"} & set(report["params"])
    assert {"ensemble", "blend", "folds", "split", "seed", "numeric_bins"} <= set(report["params"])
    markdown = (run_dir(ws, report) / "report.md").read_text()
    for needle in ("## Members", "| lasso |", "## Folds (the blend)", "![predictions.png](predictions.png)"):
        assert needle in markdown


def test_single_linear_model_report_lists_its_training_params_not_an_mlps(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    report = cv_report(ws, capsys, "--model", "linear", "--epochs", "3")
    assert report["params"]["model"] == "linear" and report["params"]["epochs"] == 3
    assert "hidden" not in report["params"] and "ensemble" not in report["params"]
    assert report["plots"] == ["curves.png", "predictions.png"]  # a model with epochs has learning curves


@pytest.mark.parametrize("classes, pictures", [(2, ["curves.png", "roc.png", "confusion.png"]),
                                               (3, ["curves.png", "confusion.png"])])
def test_classification_report_pictures(tmp_path, capsys, classes, pictures):
    ws = classification_competition(tmp_path / "ws", classes)
    report = cv_report(ws, capsys)
    assert report["plots"] == pictures
    for name in pictures:
        assert (run_dir(ws, report) / name).stat().st_size > 10_000
    assert ("positive_class" in report) == (classes == 2)


def test_headline_compares_with_the_best_earlier_run(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    first = cv_report(ws, capsys, "--model", "linear", "--epochs", "3", "--lr", "0.3")
    assert "compared" not in first
    worse = cv_report(ws, capsys, "--model", "linear", "--epochs", "1", "--lr", "1e-4")
    assert worse["compared"]["run"] == first["run"]
    assert worse["compared"]["change"] == pytest.approx(worse["mean_valid"] - first["mean_valid"])
    assert "worse than the best earlier run" in (run_dir(ws, worse) / "report.md").read_text()


def test_runs_marks_the_best_and_diff_shows_params_and_score_change(tmp_path, capsys):
    ws = make_competition(tmp_path / "ws")
    good = cv_report(ws, capsys, "--model", "linear", "--epochs", "3", "--lr", "0.3")
    bad = cv_report(ws, capsys, "--model", "linear", "--epochs", "3", "--lr", "1e-4")
    code, out, _ = run_cli(ws, capsys, "runs", "--json")
    rows = json.loads(out)
    assert [r["best"] for r in rows] == ["*", ""] and rows[0]["run"] == good["run"]
    code, out, _ = run_cli(ws, capsys, "runs", "--diff", good["run"], bad["run"])
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == ["lr"]
    assert lines[-1].startswith("log_rmse: ") and f"{bad['mean_valid'] - good['mean_valid']:+.5f}" in lines[-1]
    code, _, err = run_cli(ws, capsys, "runs", "--diff", good["run"], "no-such-run")
    assert code == 2 and "no run 'no-such-run'" in err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html: Path, png: Path) -> Image.Image:
    """Headless Chromium's screenshot of a page, as the probe of this project's machines runs it."""
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={png.parent / 'profile'}", "--window-size=1000,2400",
                    f"--screenshot={png}", html.as_uri()], check=True, capture_output=True, timeout=120)
    return Image.open(png).convert("RGB")


def ink(image: Image.Image) -> float:
    """The share of pixels that are neither white nor the light greys of the tables."""
    pixels = np.asarray(image).reshape(-1, 3).astype(int)
    return float((pixels.min(axis=1) < 200).mean())


@pytest.fixture
def chromium():
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (.ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true requires it")
        pytest.skip(message)


def test_report_html_renders_with_its_pictures_in_headless_chromium(tmp_path, capsys, chromium):
    """The page holds its pictures (data URIs, no file beside it is needed), and Chromium draws
    them: the screenshot has more ink than the same page with its pictures taken out, by more
    than 1% of its pixels (measured: 4.5% against 2.1%)."""
    ws = classification_competition(tmp_path / "ws", 2)
    report = cv_report(ws, capsys)
    page = (run_dir(ws, report) / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 3 and "<table>" in page
    alone = tmp_path / "alone" / "report.html"  # the page moved away from its PNG files
    alone.parent.mkdir()
    alone.write_text(page)
    without = tmp_path / "without" / "report.html"
    without.parent.mkdir()
    without.write_text(page.replace("src='data:image/png", "data-removed='"))
    shot = screenshot(alone, tmp_path / "with.png")
    bare = screenshot(without, tmp_path / "without.png")
    assert shot.size == (1000, 2400)
    assert ink(shot) - ink(bare) > 0.01, (ink(shot), ink(bare))  # three plots: over 1% of the page's pixels
    if os.environ.get("PIPELINE_KEEP_SCREENSHOTS"):  # to look at them: PIPELINE_KEEP_SCREENSHOTS=folder
        shutil.copy(tmp_path / "with.png", Path(os.environ["PIPELINE_KEEP_SCREENSHOTS"]) / "report.png")
