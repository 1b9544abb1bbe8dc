"""Fashion-MNIST as a pipeline target: train, evaluate, submit and pictures, through the CLI;
code edits making its stages stale; foreign and damaged checkpoints refused in one line."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import assert_edits_make_exactly_their_stages_stale, assert_one_line_error, edited, files_under, \
    run_cli, table_rows, trust_model
from pipeline import checkpoints, make
from pipeline.api import Pipeline
from pipeline.cli import main
from pipeline.errors import DataError, UsageError
from pipeline.images import stages
from pipeline.images.models import build_classifier
from pipeline.images.stages import CHECKPOINT_FORMAT, load_classifier
from pipeline.images.train import DEFAULTS, classifier_params
from pipeline.targets import FASHION

CPU = torch.device("cpu")
FLAGS = ("--model", "softmax", "--epochs", "1")


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
    report = json.loads((runs[0] / "report.json").read_text())
    assert report["valid_accuracy"] > 0.7 and (runs[0] / "curves.png").stat().st_size > 5_000
    assert cli(*base, "evaluate", "fashion", *FLAGS) == 0
    assert cli(*base, "submit", "fashion", *FLAGS) == 0
    capsys.readouterr()
    assert cli(*base, "status", "fashion", *FLAGS) == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows == {stage: "up to date" for stage in ("download", "preprocess", "train", "evaluate", "submit")}
    _, state = load_classifier(ws / "models" / "fashion-softmax.pt", CPU)
    assert state["params"] == {**DEFAULTS["softmax"], "epochs": 1}  # every classifier param, none of the target's


def test_train_hands_the_classifier_every_param_but_the_targets_own():
    """The target's params (those it has defaults for) are not the classifier's; any other is,
    and one the classifier does not take is refused before any data is read."""
    ctx = SimpleNamespace(target=FASHION, params={**FASHION.defaults, "model": "cnn", "hidden": 64})
    with pytest.raises(UsageError, match="classifier 'cnn' has no parameter hidden; valid: "):
        stages.train(ctx)


def test_k_folds_score_each_fold(trained, capsys):
    ws, base = trained
    capsys.readouterr()
    assert cli(*base, "train", "fashion", "--model", "softmax", "--epochs", "1", "--folds", "2", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["folds"]) == 2 and all(f["valid"] > 0.7 for f in report["folds"])


def test_evaluate_with_tta_reuses_the_model_and_scores_the_mirrored_images_too(trained, capsys):
    """--tta is read by evaluate and submit only: the trained model stays up to date, and the
    report's accuracy is that of the mean of each image's and its mirror image's probabilities."""
    ws, base = trained
    capsys.readouterr()
    assert cli(*base, "evaluate", "fashion", *FLAGS, "--json") == 0
    plain = json.loads(capsys.readouterr().out)
    model_before = (ws / "models" / "fashion-softmax.pt").read_bytes()
    assert cli(*base, "evaluate", "fashion", *FLAGS, "--tta", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (ws / "models" / "fashion-softmax.pt").read_bytes() == model_before
    assert report["tta"] is True and plain["tta"] is False
    model, _ = load_classifier(ws / "models" / "fashion-softmax.pt", CPU)
    from pipeline.images.data import load_fashion
    data = load_fashion(ws / "data")
    with torch.inference_mode():
        x = data.test_images
        mean = model(x).softmax(1) + model(x.flip(-1)).softmax(1)
    expected = (mean.argmax(1) == data.test_labels.long()).float().mean().item()
    assert report["test_accuracy"] == pytest.approx(expected, abs=1e-4)
    assert report["test_accuracy"] != plain["test_accuracy"]
    capsys.readouterr()
    assert cli(*base, "status", "fashion", *FLAGS, "--tta") == 0
    rows = table_rows(capsys.readouterr().out)
    assert rows["train"] == "up to date" and rows["evaluate"] == "up to date"
    assert cli(*base, "status", "fashion", *FLAGS) == 0
    assert table_rows(capsys.readouterr().out)["evaluate"].startswith("stale")


def test_editing_code_makes_each_fashion_stage_stale(trained, monkeypatch, tmp_path):
    """Item 2: every stage of the fashion target (download, preprocess, train, evaluate, submit)
    is stale with "code changed" after an edit of its code, simulated on a copy of the file."""
    ws, base = trained
    assert cli(*base, "evaluate", "fashion", *FLAGS) == 0
    assert cli(*base, "submit", "fashion", *FLAGS) == 0
    ctx = Pipeline(ws).context("fashion", {"model": "softmax", "epochs": 1})
    assert {s.run.__module__ for s in ctx.target.stages} == {"pipeline.images.stages"}
    assert_edits_make_exactly_their_stages_stale(ctx, monkeypatch, tmp_path)
    # The augmentation lives in pipeline/images/data.py: editing it makes train stale.
    train = make.get_stage(ctx.target, "train")
    with edited(monkeypatch, tmp_path, "pipeline.images.data"):
        assert make.check(train, ctx, make.read_lock(ctx.workspace), set()) == ("stale", "code changed")
        assert {row["stage"]: row["state"] for row in make.status(ctx)}["train"] == "stale"


# ----------------------------------------------------------------------------- checkpoints


def _checkpoint(path, model: str, state_dict: dict, **params):
    return checkpoints.save(path, CHECKPOINT_FORMAT, {
        "model": model, "params": classifier_params(model, params).to_dict(), "state_dict": state_dict,
        "classes": list(range(10))})


@pytest.mark.parametrize("name, params", [("mlp", {"hidden": 32}), ("cnn", {"channels": [4, [8, 8]]})])
def test_load_classifier_round_trip(tmp_path, name, params):
    """The control for the refusals below: a well-formed checkpoint loads, in eval mode, with the
    architecture its params record."""
    torch.manual_seed(0)
    built = build_classifier(name, **params)
    path = _checkpoint(tmp_path / f"fashion-{name}.pt", name, built.state_dict(), **params)
    model, state = load_classifier(path, CPU)
    assert not model.training and state["model"] == name
    x = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(model(x), built.eval()(x))


@pytest.mark.parametrize("kind, needles", [
    ("missing", ("is missing", "run `pipeline train fashion --model mlp` first")),
    ("random-bytes", ("is not a pipeline checkpoint", "delete it and run `pipeline train fashion --model mlp`")),
    ("tabular-format", ("is not a pipeline classifier checkpoint",)),
    ("other-architecture", ("is damaged", "state_dict")),
    ("other-width", ("is damaged", "state_dict")),
])
def test_bad_classifier_checkpoint_is_a_one_line_data_error(tmp_path, kind, needles):
    path = tmp_path / "models" / "fashion-mlp.pt"
    path.parent.mkdir()
    if kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "tabular-format":
        checkpoints.save(path, "pipeline.recipe/2", {"members": []})
    elif kind == "other-architecture":  # a LeNet's weights filed as an MLP
        _checkpoint(path, "mlp", build_classifier("lenet").state_dict())
    elif kind == "other-width":  # hidden 64 weights, recorded as hidden 32
        _checkpoint(path, "mlp", build_classifier("mlp", hidden=64).state_dict(), hidden=32)
    with pytest.raises(DataError) as caught:
        load_classifier(path, CPU)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for needle in needles:
        assert needle in message, (needle, message)


@pytest.fixture
def trained_copy(trained, tmp_path):
    """A copy of the trained workspace with every stage up to date for FLAGS."""
    ws, base = trained
    assert cli(*base, "evaluate", "fashion", *FLAGS) == 0  # retrains only if another test changed the model
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    return copy


@pytest.mark.parametrize("command, kind, needle", [
    ("evaluate", "other-architecture", "is damaged"),
    ("submit", "random-bytes", "is not a pipeline checkpoint"),
])
def test_foreign_checkpoint_is_refused_by_the_cli(trained_copy, capsys, command, kind, needle):
    """A checkpoint replaced together with its lock record (copied from elsewhere): evaluate and
    submit trust the lock, load the file and refuse it in one line, writing nothing."""
    ws = trained_copy
    path = ws / "models" / "fashion-softmax.pt"
    if kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        _checkpoint(path, "softmax", build_classifier("mlp").state_dict())
    trust_model(ws, "fashion/softmax", "models/fashion-softmax.pt")
    before = {p: p.read_bytes() for p in files_under(ws / "submissions")}
    runs = sorted((ws / "reports" / "runs").iterdir())
    code, out, err = run_cli(ws, capsys, command, "fashion", *FLAGS)
    assert code == 1 and out == "", err
    assert_one_line_error(code, err, str(path), needle)
    assert "train: up to date, skipped" in err
    assert {p: p.read_bytes() for p in files_under(ws / "submissions")} == before
    assert sorted((ws / "reports" / "runs").iterdir()) == runs  # no report for a model it refused


def test_fashion_trains_with_sgd(trained, capsys):
    """Item 8: --optimizer sgd is refused for tabular targets (see test_cli) but is one of the
    classifiers' optimizers."""
    ws, base = trained
    capsys.readouterr()
    assert cli(*base, "train", "fashion", *FLAGS, "--optimizer", "sgd", "--lr", "0.05", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"]["optimizer"] == "sgd" and report["valid_accuracy"] > 0.6
