"""MAP@3, the worked example of a metric in a module of its own (issue 30): its value, batched as
the trainer scores, and its submission of three rows per id written by the real stages, checked
and in the sample's format. The metric is found by its name only, so these tests also check the
one line of pipeline.metrics that registers pipeline.map_at_k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import declare
from pipeline.api import Pipeline
from pipeline.errors import ConfigError, DataError
from pipeline.metrics import METRICS, metric_for
from pipeline.targets import all_targets
from pipeline.workspace import Workspace

COLOURS = ["blue", "gold", "green", "red"]


def map_at_3(prob: np.ndarray, labels: np.ndarray) -> float:
    """A reference: each row's 1/rank of its label among its three most probable classes."""
    best = np.argsort(-prob, axis=1)[:, :3]
    return float(np.mean([1 / (list(b).index(y) + 1) if y in b else 0.0 for b, y in zip(best, labels)]))


def test_map_at_3_by_hand():
    """Rank 1, rank 3, absent from the three best, rank 2: (1 + 1/3 + 0 + 1/2) / 4."""
    metric = metric_for("map@3", "classification")
    prob = torch.tensor([[0.1, 0.6, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1], [0.5, 0.15, 0.3, 0.05], [0.2, 0.1, 0.3, 0.4]],
                        dtype=torch.float64)
    labels = torch.tensor([1, 2, 3, 2])
    assert float(metric.score(prob, labels)) == pytest.approx(11 / 24, rel=1e-12)
    assert metric.higher_is_better and metric.task.name == "classification" and metric.submits.ranked
    assert metric.submits.rows_per_id(COLOURS) == 3 and metric.submits.rows_per_id(COLOURS[:2]) == 2
    assert float(metric.score(torch.eye(4, dtype=torch.float64), torch.arange(4))) == 1.0
    # two classes: both ranked; the label second in the last row only
    assert float(metric.score(prob[:, :2], torch.tensor([1, 0, 0, 1]))) == pytest.approx((1 + 1 + 1 + 1 / 2) / 4)


def test_map_at_3_batched_as_the_trainer_scores():
    """(folds, configs, rows, classes) against labels (rows,) or each fold's (folds, 1, rows)."""
    r = np.random.default_rng(3)
    prob = torch.from_numpy(r.dirichlet(np.ones(5), (2, 3, 60)))
    labels = torch.from_numpy(r.integers(0, 5, 60))
    metric = METRICS["map@3"]
    grid = metric.score(prob, labels)
    assert grid.shape == (2, 3)
    expected = [[map_at_3(p.numpy(), labels.numpy()) for p in fold] for fold in prob]
    torch.testing.assert_close(grid, torch.tensor(expected, dtype=torch.float64))
    assert len(set(grid.flatten().tolist())) == 6
    terms = metric.term(prob, labels.expand(2, 1, 60))
    assert terms.shape == (2, 3, 60)
    torch.testing.assert_close(terms.mean(-1), grid)


def _shop(root, rows: int = 160, tests: int = 24, sample: pd.DataFrame | None = None, label="colour"):
    """A classification table of four colours that two numbers tell apart, with noise."""
    r = np.random.default_rng(0)
    x = r.normal(size=(rows + tests, 2))
    score = np.stack([x[:, 0], -x[:, 0], x[:, 1], -x[:, 1]], 1) + r.normal(0, 0.8, (rows + tests, 4))
    frame = pd.DataFrame({"key": np.arange(500, 500 + rows + tests), "a": x[:, 0], "b": x[:, 1],
                          "colour": np.array(COLOURS)[score.argmax(1)]})
    if not isinstance(label, str):  # a second label: the colours shuffled
        frame["tint"] = frame["colour"].sample(frac=1, random_state=1).to_numpy()
    frame.iloc[:rows].to_csv(root / "train.csv", index=False)
    frame.iloc[rows:].drop(columns=["colour", "tint"], errors="ignore").to_csv(root / "test.csv", index=False)
    keys = dict(train="train.csv", test="test.csv", id="key", label=label, task="classification", metric="map@3")
    if sample is not None:
        sample.to_csv(root / "sample.csv", index=False)
        keys["sample"] = "sample.csv"
    (root / "pipeline.toml").write_text(declare("shop", **keys))
    return frame.iloc[rows:]["key"].tolist()


def _run_dir(root) -> Path:
    return next((root / "reports" / "runs").glob("*/test.csv")).parent


def test_the_submission_is_each_ids_three_best_classes_in_the_test_files_order(tmp_path):
    ids = _shop(tmp_path)
    pipe = Pipeline(tmp_path)
    report = pipe.cv("shop", epochs=30)
    assert report["metric"] == "map@3" and 0.6 < report["mean_valid"] <= 1  # chance: (1 + 1/2 + 1/3) / 4
    done = pipe.submit("shop", epochs=30)
    submission = pd.read_csv(done["submission"])
    assert list(submission.columns) == ["key", "colour"] and done["rows"] == 3 * len(ids) == len(submission)
    assert submission["key"].tolist() == [i for i in ids for _ in range(3)]
    assert submission["colour"].isin(COLOURS).all()
    assert (submission.groupby("key")["colour"].nunique() == 3).all()
    probabilities = pd.read_csv(_run_dir(tmp_path) / "test.csv")  # the model's, beside its CV
    assert probabilities["key"].tolist() == ids
    best = np.argsort(-probabilities[COLOURS].to_numpy(), axis=1, kind="stable")[:, :3]
    assert submission["colour"].tolist() == [COLOURS[c] for c in best.ravel()]


def test_a_sample_of_three_rows_per_id_is_followed(tmp_path):
    ids = list(range(500 + 160, 500 + 160 + 24))
    order = [ids[i] for i in np.random.default_rng(2).permutation(len(ids))]
    sample = pd.DataFrame({"key": [i for i in order for _ in range(3)], "colour": COLOURS[:3] * len(ids)})
    assert _shop(tmp_path, sample=sample) == ids
    done = Pipeline(tmp_path).submit("shop", epochs=5)
    submission = pd.read_csv(done["submission"])
    assert submission["key"].tolist() == sample["key"].tolist() and len(submission) == 72
    assert (submission.groupby("key", sort=False)["colour"].nunique() == 3).all()


def test_a_sample_of_one_row_per_id_is_one_line(tmp_path):
    sample = pd.DataFrame({"key": range(500 + 160, 500 + 160 + 24), "colour": "blue"})
    _shop(tmp_path, sample=sample)
    with pytest.raises(DataError) as caught:
        Pipeline(tmp_path).submit("shop", epochs=5)
    assert "sample.csv: key '660' is not 3 times in a row; this target's metric submits 3 rows per id" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_several_ranked_labels_are_refused_when_declared(tmp_path):
    """Each label's ranked rows are its own classes: several labels cannot share a submission, so
    such a target is refused when it is read, before any label trains."""
    _shop(tmp_path, label=["colour", "tint"])
    with pytest.raises(ConfigError) as caught:
        all_targets(Workspace(tmp_path))
    assert str(caught.value).endswith(": metric map@3 submits a ranked list of one label's classes, several rows "
                                      "per id, which several labels cannot share: declare a target per label column")
    assert "[target.shop]" in str(caught.value) and "\n" not in str(caught.value)
