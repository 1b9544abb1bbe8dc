"""`pipeline init` (issue 26): a competition's files as Kaggle ships them become a declaration
that `pipeline run` takes to a submission in the sample's exact format: its columns in its
order, its rows in its order, its id dtype."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import assert_one_line_error, run_cli
from pipeline.params import read_toml

R = np.random.default_rng(0)


def _write(folder: Path, train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("train", train), ("test", test), ("sample_submission", sample)):
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


def _given(folder: Path, zipped: bool) -> Path:
    """What `pipeline init` is given: the folder, or a zip of it as Kaggle ships a competition."""
    if not zipped:
        return folder
    with zipfile.ZipFile(folder.with_suffix(".zip"), "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{folder.name}/{path.name}")
    return folder.with_suffix(".zip")


def _tables(rows: int, labels, test_rows: int = 60, id_name: str = "id"):
    x = R.normal(size=(rows + test_rows, 3))
    frame = pd.DataFrame({id_name: np.arange(rows + test_rows) + 7, "a": x[:, 0], "b": x[:, 1],
                          "kind": R.choice(["p", "q", "r"], rows + test_rows)})
    train, test = frame.iloc[:rows].copy(), frame.iloc[rows:].reset_index(drop=True)
    train["target"] = labels(x[:rows])
    return train, test


def _run(ws: Path, capsys, name: str) -> tuple[dict, pd.DataFrame]:
    code, out, err = run_cli(ws, capsys, "run", name, "--model", "lightgbm", "--json")
    assert code == 0, err
    outcome = json.loads(out)
    return outcome, pd.read_csv(outcome["submission"])


def _assert_like(submission: pd.DataFrame, sample: pd.DataFrame):
    assert list(submission.columns) == list(sample.columns)
    assert submission.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()
    assert submission.dtypes.iloc[0] == sample.dtypes.iloc[0]


@pytest.mark.parametrize("zipped", [False, True])
def test_a_binary_competition_with_probabilities(tmp_path, capsys, zipped):
    train, test = _tables(300, lambda x: (x[:, 0] + R.normal(0, 0.5, len(x)) > 0).astype(int))
    sample = pd.DataFrame({"id": test["id"], "target": 0.5}).sample(frac=1, random_state=0)  # rows in its own order
    folder = _write(tmp_path / "playground-s4e1", train, test, sample)
    code, out, err = run_cli(tmp_path, capsys, "init", str(_given(folder, zipped)))
    assert code == 0, err
    declared = read_toml(tmp_path / "pipeline.toml")["target"]["playground-s4e1"]
    assert {k: declared[k] for k in ("id", "label", "task", "metric", "positive")} == {
        "id": "id", "label": "target", "task": "classification", "metric": "auc", "positive": 1}
    assert "auc or logloss (check the Evaluation page)" in out and "pipeline run playground-s4e1" in out
    outcome, submission = _run(tmp_path, capsys, "playground-s4e1")
    _assert_like(submission, sample)
    assert outcome["metric"] == "auc" and outcome["score"] > 0.8
    assert submission["target"].between(0, 1).all() and submission["target"].nunique() > 10


@pytest.mark.parametrize("zipped", [False, True])
def test_a_multiclass_competition_with_a_column_per_class_in_the_samples_order(tmp_path, capsys, zipped):
    names = np.array(["Class_2", "Class_3", "Class_1"])
    train, test = _tables(300, lambda x: names[np.digitize(x[:, 0], [-0.5, 0.5])])
    sample = pd.DataFrame({"id": test["id"], "Class_3": 1 / 3, "Class_1": 1 / 3, "Class_2": 1 / 3})
    folder = _write(tmp_path / "otto", train, test, sample)
    assert run_cli(tmp_path, capsys, "init", str(_given(folder, zipped)), "--name", "classes")[0] == 0
    declared = read_toml(tmp_path / "pipeline.toml")["target"]["classes"]
    assert (declared["train"], declared["label"], declared["metric"]) == (
        "otto/train.csv", "target", "logloss")
    assert declared.get("archive") == ("otto.zip" if zipped else None)
    _, submission = _run(tmp_path, capsys, "classes")
    _assert_like(submission, sample)
    np.testing.assert_allclose(submission[["Class_3", "Class_1", "Class_2"]].sum(1), 1, atol=1e-4)
    truth = names[np.digitize(test.set_index("id").loc[submission["id"], "a"], [-0.5, 0.5])]
    guessed = submission[["Class_3", "Class_1", "Class_2"]].idxmax(axis=1)
    assert (guessed.to_numpy() == truth).mean() > 0.8  # each column holds its own class's probability


@pytest.mark.parametrize("zipped", [False, True])
def test_house_prices_with_a_sample_made_from_the_test_ids(shared_datasets, tmp_path, capsys, zipped):
    test = pd.read_csv(shared_datasets / "kaggle_house_pred_test.csv")
    train = pd.read_csv(shared_datasets / "kaggle_house_pred_train.csv")
    sample = pd.DataFrame({"Id": test["Id"], "SalePrice": 180000.0})
    folder = tmp_path / "house-prices"
    folder.mkdir()
    train.to_csv(folder / "train.csv.zip", index=False)  # a zipped CSV stands for the CSV
    test.to_csv(folder / "test.csv", index=False)
    sample.to_csv(folder / "sample_submission.csv", index=False)
    assert run_cli(tmp_path, capsys, "init", str(_given(folder, zipped)))[0] == 0
    declared = read_toml(tmp_path / "pipeline.toml")["target"]["house-prices"]
    assert (declared["train"], declared["id"], declared["label"], declared["task"], declared["metric"]) == (
        "house-prices/train.csv.zip", "Id", "SalePrice", "regression", "rmsle")
    outcome, submission = _run(tmp_path, capsys, "house-prices")
    _assert_like(submission, sample)
    assert outcome["score"] < 0.16 and submission["SalePrice"].between(30_000, 800_000).all()


@pytest.mark.parametrize("zipped", [False, True])
def test_a_multi_target_regression_gets_a_model_per_column_and_one_submission(tmp_path, capsys, zipped):
    """Two label columns: a model per column (the other label never a feature), each column's
    CV and their mean, one submission in the sample's format; from a folder or a zip."""
    train, test = _tables(300, lambda x: x[:, 0] + 0.1 * R.normal(size=len(x)))
    train = train.rename(columns={"target": "y1"}).assign(y2=2 * train["b"] + 0.1 * R.normal(size=300))
    sample = pd.DataFrame({"id": test["id"], "y2": 0.0, "y1": 0.0})  # its own column order
    folder = _write(tmp_path / "two", train, test, sample)
    assert run_cli(tmp_path, capsys, "init", str(_given(folder, zipped)))[0] == 0
    declared = read_toml(tmp_path / "pipeline.toml")["target"]["two"]
    assert (declared["label"], declared["task"]) == (["y2", "y1"], "regression")
    code, out, err = run_cli(tmp_path, capsys, "run", "two", "--model", "lightgbm", "--json")
    assert code == 0, err
    outcome = json.loads(out)
    assert outcome["y1"] < 0.3 and outcome["y2"] < 0.5  # each column learned from its own signal
    assert outcome["mean"] == pytest.approx((outcome["y1"] + outcome["y2"]) / 2)
    submission = pd.read_csv(outcome["submission"])
    _assert_like(submission, sample)
    np.testing.assert_allclose(submission["y1"], pd.read_csv(tmp_path / "submissions" / "two.y1.csv")["y1"])
    code, out, _ = run_cli(tmp_path, capsys, "columns", "two.y1", "--json")
    assert code == 0 and [c["column"] for c in json.loads(out)] == ["a", "b", "kind"]  # not y2
    code, out, _ = run_cli(tmp_path, capsys, "status", "two")
    assert "y2: submit" in out and "y1: cv" in out


def test_a_multi_target_takes_its_params_and_shares_one_time_limit(tmp_path, capsys):
    """params.toml's [NAME] applies to every column's target; --time-limit is the command's."""
    train, test = _tables(200, lambda x: x[:, 0])
    train = train.rename(columns={"target": "y1"}).assign(y2=train["b"])
    folder = _write(tmp_path / "two", train, test, pd.DataFrame({"id": test["id"], "y1": 0.0, "y2": 0.0}))
    assert run_cli(tmp_path, capsys, "init", str(folder))[0] == 0
    (tmp_path / "params.toml").write_text('[two]\nmodel = "lightgbm"\n')
    code, out, err = run_cli(tmp_path, capsys, "cv", "two", "--time-limit", "30s", "--json")
    assert code == 0, err
    reports = [json.loads(Path(r).with_name("report.json").read_text()) for r in json.loads(out)["reports"]]
    assert [r["params"]["model"] for r in reports] == ["lightgbm", "lightgbm"]
    first, second = (r["time_limit"]["seconds"] for r in reports)
    assert first == pytest.approx(15, abs=0.5)  # an even share of the 30 s
    assert 15 < second < 30  # all that the first column left


def test_each_command_on_a_multi_target_runs_on_every_column_and_joins_what_they_made(tmp_path, capsys):
    """download, preprocess, train and submit on NAME run on each column's target (NAME.COLUMN)
    and join what those made; a command no column's target takes on NAME is one line naming them."""
    train, test = _tables(120, lambda x: x[:, 0])
    train = train.rename(columns={"target": "y1"}).assign(y2=train["b"])
    folder = _write(tmp_path / "two", train, test, pd.DataFrame({"id": test["id"], "y2": 0.0, "y1": 0.0}))
    assert run_cli(tmp_path, capsys, "init", str(folder))[0] == 0
    (tmp_path / "params.toml").write_text('[two]\nmodel = "lightgbm"\nfolds = 2\n')
    code, out, err = run_cli(tmp_path, capsys, "download", "two")
    assert code == 0 and out.split() == ["two/test.csv", "two/train.csv"], err
    code, out, err = run_cli(tmp_path, capsys, "preprocess", "two", "--json")
    assert code == 0 and list(json.loads(out)) == ["two.y2", "two.y1"], err
    code, out, err = run_cli(tmp_path, capsys, "train", "two", "--json")
    assert code == 0 and json.loads(out) == {"two.y2": "models/two.y2.pt", "two.y1": "models/two.y1.pt"}, err
    code, out, err = run_cli(tmp_path, capsys, "submit", "two", "--out", str(tmp_path / "copy.csv"))
    assert code == 0 and out.strip() == f"wrote 60 rows to {tmp_path / 'copy.csv'}", err
    joined = pd.read_csv(tmp_path / "submissions" / "two.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "copy.csv"), joined)
    assert list(joined.columns) == ["id", "y2", "y1"]
    for column in ("y2", "y1"):
        np.testing.assert_allclose(joined[column], pd.read_csv(tmp_path / "submissions" / f"two.{column}.csv")[column])
    for command in ("evaluate", "sweep", "columns"):
        code, _, err = run_cli(tmp_path, capsys, command, "two")
        assert_one_line_error(code, err, f"target two has several labels: {command} one of two.y2, two.y1")


@pytest.mark.parametrize("shape, needle", [
    ("two tasks", "are not all of one task and metric"),
    ("string classes", "set positive = \"CLASS\""),
    ("no shared id", "set id = \"COLUMN\""),
    ("classes unknown", "set label = \"COLUMN\""),
])
def test_what_cannot_be_told_apart_is_one_line_naming_the_key(tmp_path, capsys, shape, needle):
    train, test = _tables(50, lambda x: x[:, 0])
    train = train.rename(columns={"target": "y1"}).assign(y2=R.choice(["a", "b"], 50))
    sample = pd.DataFrame({"id": test["id"], "y1": 0.0, "y2": "a"})
    if shape == "string classes":
        train = train.drop(columns="y2").assign(y1=R.choice(["left", "right"], 50))
        sample = sample.drop(columns="y2").assign(y1=0.5)
    elif shape == "no shared id":
        sample = sample.rename(columns={"id": "key"})
    elif shape == "classes unknown":
        sample = pd.DataFrame({"id": test["id"], "A": 0.5, "B": 0.5})
    folder = _write(tmp_path / "c", train, test, sample)
    code, _, err = run_cli(tmp_path, capsys, "init", str(folder))
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "pipeline.toml").exists()


def test_a_target_declared_twice_is_refused_and_the_file_kept(tmp_path, capsys):
    train, test = _tables(50, lambda x: x[:, 0])
    folder = _write(tmp_path / "c", train, test, pd.DataFrame({"id": test["id"], "target": 0.0}))
    (tmp_path / "pipeline.toml").write_text("# mine\n[target.other]\ntrain = 'a.csv'\n")
    assert run_cli(tmp_path, capsys, "init", str(folder))[0] == 0
    assert (tmp_path / "pipeline.toml").read_text().startswith("# mine\n[target.other]\ntrain = 'a.csv'\n")
    code, _, err = run_cli(tmp_path, capsys, "init", str(folder))
    assert_one_line_error(code, err, "target 'c' is declared already; give another --name")
