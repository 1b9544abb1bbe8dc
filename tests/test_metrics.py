"""Kaggle's metrics (issue 14, item 1): each agrees with scikit-learn's on random data, batched
over leading dimensions as the trainer calls them, with its direction and its space."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from pipeline.errors import ConfigError
from pipeline import metrics
from pipeline.metrics import METRICS, PROBABILITY_FLOOR, Metric, metric_for
from pipeline.tasks import TASKS

ROWS = 200


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def positive_values(seed: int, n: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Prices and noisy predictions of them, some below 1 (where log_rmse clamps)."""
    r = rng(seed)
    y = r.lognormal(3, 1, n)
    pred = y * r.lognormal(0, 0.3, n)
    pred[:10] = r.uniform(0.01, 0.99, 10)
    return pred, y


def probabilities(seed: int, n: int = ROWS, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and labels that agree with them more often than chance."""
    r = rng(seed)
    labels = r.integers(0, classes, n)
    logits = r.normal(0, 1.5, (n, classes))
    logits[np.arange(n), labels] += 1.0
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return prob, labels


def score(name: str, pred: np.ndarray, labels: np.ndarray) -> float:
    """Our metric on float64 tensors (labels as the trainer holds them)."""
    metric = METRICS[name]
    y = torch.from_numpy(labels).double() if metric.task.continuous else torch.from_numpy(labels)
    return float(metric.score(torch.from_numpy(pred).double(), y))


BUILT_IN = {"rmse": ("regression", "values"), "log_rmse": ("regression", "values"), "rmsle": ("regression", "values"),
            "mae": ("regression", "values"), "accuracy": ("classification", "labels"),
            "logloss": ("classification", "probabilities"), "auc": ("classification", "probabilities")}
# the metrics that modules of their own register (the last lines of pipeline.metrics import them)
REGISTERED = [name for name in METRICS if name not in BUILT_IN]


def test_every_kaggle_metric_is_there_with_its_task_and_submission():
    assert list(METRICS)[:len(BUILT_IN)] == list(BUILT_IN)  # the registered ones after them
    assert {name: (m.task.name, m.submits.name) for name, m in METRICS.items() if name in BUILT_IN} == BUILT_IN


# ----------------------------------------------------------------------------- against scikit-learn


@pytest.mark.parametrize("seed", [0, 1])
def test_rmse_is_sklearns(seed):
    pred, y = rng(seed).normal(0, 10, (2, ROWS))
    assert score("rmse", pred, y) == pytest.approx(math.sqrt(sk.mean_squared_error(y, pred)), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_log_rmse_is_rmse_of_clamped_logs(seed):
    """d2l's: log(max(p, 1)) against log(y); predictions below 1 count as 1."""
    pred, y = positive_values(seed)
    expected = math.sqrt(sk.mean_squared_error(np.log(y), np.log(np.maximum(pred, 1))))
    assert score("log_rmse", pred, y) == pytest.approx(expected, rel=1e-12)
    assert score("log_rmse", pred, y) != pytest.approx(math.sqrt(sk.mean_squared_error(np.log(y), np.log(pred))))


@pytest.mark.parametrize("seed", [0, 1])
def test_rmsle_is_sklearns(seed):
    pred, y = positive_values(seed)
    y[:5] = 0.0  # rmsle takes a label of 0
    expected = math.sqrt(sk.mean_squared_log_error(y, pred))
    assert score("rmsle", pred, y) == pytest.approx(expected, rel=1e-12)
    assert score("rmsle", pred, y) == pytest.approx(sk.root_mean_squared_log_error(y, pred), rel=1e-12)


def test_rmsle_counts_a_negative_prediction_as_zero():
    pred, y = positive_values(2)
    negative = pred.copy()
    negative[:7] = -3.0
    clamped = np.maximum(negative, 0)
    assert score("rmsle", negative, y) == pytest.approx(sk.root_mean_squared_log_error(y, clamped), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_mae_is_sklearns(seed):
    pred, y = rng(seed).normal(0, 10, (2, ROWS))
    assert score("mae", pred, y) == pytest.approx(sk.mean_absolute_error(y, pred), rel=1e-12)


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_accuracy_is_sklearns_of_the_most_probable_class(classes):
    prob, labels = probabilities(classes, classes=classes)
    expected = sk.accuracy_score(labels, prob.argmax(1))
    assert 1 / classes < expected < 1  # neither trivial nor perfect
    assert score("accuracy", prob, labels) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_logloss_is_sklearns(classes):
    prob, labels = probabilities(10 + classes, classes=classes)
    expected = sk.log_loss(labels, prob, labels=list(range(classes)))
    assert score("logloss", prob, labels) == pytest.approx(expected, rel=1e-10)
    if classes == 2:  # scikit-learn's binary form: P(class 1) alone
        assert score("logloss", prob, labels) == pytest.approx(sk.log_loss(labels, prob[:, 1]), rel=1e-10)


def test_logloss_near_zero_and_one_and_clipped_at_the_floor():
    """Probabilities of 1e-12 and 1 - 1e-12 are taken as they are; exact 0 and 1 are clipped at
    1e-15 as Kaggle does, so a confident mistake costs log(1e15) = 34.5, not infinity."""
    prob, labels = probabilities(20, classes=3)
    near = np.full_like(prob, 0.5e-12)
    near[np.arange(ROWS), prob.argmax(1)] = 1 - 1e-12  # confident, right on some rows, wrong on others
    wrong = near[np.arange(ROWS), labels] < 0.5
    assert 0 < wrong.sum() < ROWS
    assert score("logloss", near, labels) == pytest.approx(sk.log_loss(labels, near, labels=[0, 1, 2]), rel=1e-10)

    exact = np.zeros_like(prob)
    exact[np.arange(ROWS), prob.argmax(1)] = 1.0
    ours = score("logloss", exact, labels)
    assert math.isfinite(ours)
    clipped = np.clip(exact, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    assert ours == pytest.approx(sk.log_loss(labels, clipped, labels=[0, 1, 2]), rel=1e-6)
    assert ours == pytest.approx(wrong.mean() * -math.log(1e-15), rel=1e-6)
    # float32, as the trainer scores: the floor is representable and the loss is the same
    y = torch.from_numpy(labels)
    assert float(METRICS["logloss"].score(torch.from_numpy(exact).float(), y)) == pytest.approx(ours, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_is_sklearns_with_ties(seed):
    """P(class 1) rounded to one decimal: many tied scores, counted half as roc_auc_score does."""
    r = rng(seed)
    labels = r.integers(0, 2, ROWS)
    p1 = np.clip(0.5 + 0.25 * (labels - 0.5) + r.normal(0, 0.25, ROWS), 0, 1).round(1)
    assert len(np.unique(p1)) < 12  # ties, lots of them
    prob = np.stack([1 - p1, p1], 1)
    expected = sk.roc_auc_score(labels, p1)
    assert 0.5 < expected < 1
    assert score("auc", prob, labels) == pytest.approx(expected, rel=1e-12)
    # untied scores, and a ranking that is exactly reversed
    p1 = r.random(ROWS)
    assert score("auc", np.stack([1 - p1, p1], 1), labels) == pytest.approx(sk.roc_auc_score(labels, p1), rel=1e-12)
    assert score("auc", np.stack([1 - labels, labels], 1).astype(float), labels) == 1.0
    assert score("auc", np.stack([labels, 1 - labels], 1).astype(float), labels) == 0.0
    assert score("auc", np.full((ROWS, 2), 0.5), labels) == 0.5  # all tied


# ----------------------------------------------------------------------------- batched


def batch_of(name: str, k: int = 4, seed: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` different predictions (k, rows[, classes]) of one label vector (rows,)."""
    metric = METRICS[name]
    if metric.task.continuous:
        preds, ys = zip(*(positive_values(seed + i) for i in range(k)))
        return torch.from_numpy(np.stack(preds)).float(), torch.from_numpy(ys[0]).float()
    classes = 2 if metric.binary else 3
    probs, labels = zip(*(probabilities(seed + i, classes=classes) for i in range(k)))
    return torch.from_numpy(np.stack(probs)).float(), torch.from_numpy(labels[0])


@pytest.mark.parametrize("name", sorted(METRICS))
def test_a_batch_scores_as_k_separate_calls(name):
    metric = METRICS[name]
    pred, y = batch_of(name)
    batched = metric.score(pred, y)
    assert batched.shape == (4,)
    separate = torch.stack([metric.score(p, y) for p in pred])
    torch.testing.assert_close(batched, separate, rtol=1e-6, atol=1e-7)
    assert len(set(separate.tolist())) == 4  # the k predictions really differ
    # two leading dimensions (folds x configs), as the trainer's curves
    grid = metric.score(pred.view(2, 2, *pred.shape[1:]), y)
    torch.testing.assert_close(grid, batched.view(2, 2))


# ----------------------------------------------------------------------------- directions, errors, spaces


@pytest.mark.parametrize("name, higher", [("rmse", False), ("log_rmse", False), ("rmsle", False), ("mae", False),
                                          ("accuracy", True), ("logloss", False), ("auc", True)])
def test_direction_better_and_sort_key(name, higher):
    metric = METRICS[name]
    assert metric.higher_is_better is higher
    good, bad = (0.9, 0.6) if higher else (0.1, 0.4)
    assert metric.better(good, bad) and not metric.better(bad, good) and not metric.better(good, good)
    assert sorted([bad, good, bad], key=metric.sort_key) == [good, bad, bad]  # best first


def test_metric_for_finds_and_checks_the_task():
    assert metric_for("auc", "classification") is METRICS["auc"]
    assert metric_for("rmsle") is METRICS["rmsle"]
    assert TASKS["regression"].default_metric == "rmse" and TASKS["classification"].default_metric == "accuracy"


@pytest.mark.parametrize("name, task, expected", [
    ("r2", None, "where: unknown metric 'r2' (choose from rmse, log_rmse, rmsle, mae, accuracy, logloss, auc)"),
    ("auc", "regression",
     "where: metric 'auc' does not fit task 'regression' (choose from rmse, log_rmse, rmsle, mae)"),
    ("rmsle", "classification",
     "where: metric 'rmsle' does not fit task 'classification' (choose from accuracy, logloss, auc)"),
])
def test_metric_for_errors_are_one_line_offering_the_tasks_metrics(name, task, expected):
    """The built-in metrics that fit, then the registered ones that do."""
    offered = [m for m in REGISTERED if METRICS[m].task.name == (task or METRICS[m].task.name)]
    with pytest.raises(ConfigError) as caught:
        metric_for(name, task, where="where")
    assert str(caught.value) == expected[:-1] + "".join(f", {m}" for m in offered) + ")"


def test_a_registered_metric_is_one_a_target_can_name(monkeypatch):
    """What a metric in a module of its own does: register it, and metric_for finds and offers it."""
    monkeypatch.setattr(metrics, "METRICS", dict(METRICS))
    median = metrics.register(Metric("medae", TASKS["regression"], False, metrics.VALUES,
                                     whole=lambda pred, y: (pred - y).abs().median(-1).values))
    assert metric_for("medae", "regression") is median
    assert float(median.score(torch.tensor([[1.0, 5.0, 2.0]]), torch.tensor([1.0, 2.0, 4.0]))[0]) == 2.0
    with pytest.raises(ConfigError, match=r"choose from rmse, log_rmse, rmsle, mae, .*medae\)$"):
        metric_for("r2", "regression")
    assert "medae" not in METRICS  # the module's own table is untouched


@pytest.mark.parametrize("name, needle", [("rmse", "registered twice"), ("my:metric", "without ':'"),
                                          ("map @3", "one word"), ("", "one word")])
def test_register_refuses_a_name_taken_or_that_a_target_cannot_name(monkeypatch, name, needle):
    monkeypatch.setattr(metrics, "METRICS", dict(METRICS))
    with pytest.raises(ValueError, match=needle):
        metrics.register(Metric(name, TASKS["regression"], False, metrics.VALUES, whole=lambda pred, y: pred))


def test_log_space_is_log1p_for_rmsle_and_log_otherwise():
    y = torch.tensor([0.0, 0.5, 3.0, 1e4], dtype=torch.float64)
    forward, back = METRICS["rmsle"].log
    torch.testing.assert_close(forward(y), torch.log1p(y))
    torch.testing.assert_close(back(forward(y)), y)
    assert torch.isfinite(forward(y)).all()  # a label of 0 is fine in rmsle's space
    for name in ("rmse", "log_rmse", "mae"):
        forward, back = METRICS[name].log
        torch.testing.assert_close(forward(y[1:]), torch.log(y[1:]))
        torch.testing.assert_close(back(forward(y[1:])), y[1:])


def test_blend_space_of_log_metrics_is_where_they_compare():
    """A metric's space and its way back: log metrics compare (and blend) in log space."""
    values = torch.tensor([2.0, 10.0, 300.0], dtype=torch.float64)
    for name, space in (("log_rmse", torch.log), ("rmsle", torch.log1p), ("rmse", lambda v: v), ("mae", lambda v: v)):
        metric = METRICS[name]
        torch.testing.assert_close(metric.space(values), space(values))
        torch.testing.assert_close(metric.unspace(metric.space(values)), values)
