"""Fashion-MNIST as a pipeline target: train, evaluate, submit and pictures, through the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.cli import main


def cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def trained(shared_datasets, tmp_path_factory):
    """A workspace with a one-epoch softmax model (cheap, and well above chance)."""
    ws = tmp_path_factory.mktemp("fashion")
    base = ("--workdir", str(ws), "--mirror", str(shared_datasets))
    assert cli(*base, "train", "fashion", "--model", "softmax", "--epochs", "1") == 0
    return ws, base


def test_evaluate_reports_accuracy_per_class_and_pictures(trained, capsys):
    ws, base = trained
    capsys.readouterr()
    assert cli(*base, "evaluate", "fashion", "--model", "softmax", "--epochs", "1", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("test_accuracy", "per_class", "seconds", "params", "device"):
        assert key in report
    assert report["test_accuracy"] > 0.7
    assert len(report["per_class"]) == 10 and "Ankle boot" in report["per_class"]
    assert sum(map(sum, report["confusion"])) == 10_000
    run = ws / "reports" / "runs" / report["run"]
    for picture in ("confusion.png", "predictions.png"):
        assert (run / picture).stat().st_size > 5_000
    assert "test accuracy" in (run / "report.md").read_text()


def test_submit_writes_ten_thousand_rows(trained, tmp_path):
    ws, base = trained
    out = tmp_path / "f.csv"
    assert cli(*base, "submit", "fashion", "--model", "softmax", "--epochs", "1", "--out", str(out)) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["Id", "Label"] and len(frame) == 10_000
    assert frame["Id"].tolist() == list(range(10_000)) and frame["Label"].between(0, 9).all()


def test_train_report_has_learning_curves_and_status_is_clean(trained, capsys):
    ws, base = trained
    runs = sorted((ws / "reports" / "runs").glob("fashion-train-*"))
    report = json.loads((runs[-1] / "report.json").read_text())
    assert report["valid_accuracy"] > 0.7 and (runs[-1] / "curves.png").stat().st_size > 5_000
    capsys.readouterr()
    assert cli(*base, "status", "fashion", "--model", "softmax", "--epochs", "1") == 0
    assert "stale" not in capsys.readouterr().out  # evaluate and submit reused the model


def test_k_folds_score_each_fold(trained, capsys):
    ws, base = trained
    capsys.readouterr()
    assert cli(*base, "train", "fashion", "--model", "softmax", "--epochs", "1", "--folds", "2", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["folds"]) == 2 and all(f["valid"] > 0.7 for f in report["folds"])
