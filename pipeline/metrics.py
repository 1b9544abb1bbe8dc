"""Kaggle's common metrics: what each scores, which way is better, and what a submission holds.

Every metric works on torch tensors, batched over leading dimensions, so that the trainer can
score all folds x configs at once on the device. Predictions are in the labels' scale: values
for regression, class probabilities ``(..., rows, classes)`` for classification.

A regression metric compares predictions and labels in its ``space`` (log prices for
``log_rmse``, log1p for ``rmsle``); the blend of several models averages there too, so a blend
for a log metric is a geometric mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from pipeline.errors import ConfigError
from pipeline.tasks import TASKS, Task

PROBABILITY_FLOOR = 1e-15  # log-loss clips probabilities here, as scikit-learn and Kaggle do


def _same(values: torch.Tensor) -> torch.Tensor:
    return values


def _squared(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred - labels).square()


def _absolute(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (pred - labels).abs()


def _hits(prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (prob.argmax(-1) == labels).to(prob.dtype)


def _surprise(prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    picked = prob.gather(-1, labels.expand(*prob.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return -picked.clamp_min(PROBABILITY_FLOOR).log()


def auc(prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of P(class 1) ``prob[..., 1]`` against 0/1 ``labels``:
    the Mann-Whitney statistic, ties counted half (average ranks), batched over leading dims."""
    scores = prob[..., 1].contiguous()
    ordered = scores.sort(-1).values
    # 1-based average rank of every score: its first and last position among equal scores
    ranks = (torch.searchsorted(ordered, scores) + torch.searchsorted(ordered, scores, right=True) + 1) / 2
    positive = labels.to(scores.dtype)
    n_pos = positive.sum()
    n_neg = len(labels) - n_pos
    return ((ranks * positive).sum(-1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


class Submits:
    """What a submission holds, and the checks its frame must pass (see
    :func:`pipeline.submissions.check_submission`). A submission has one row per id, unless its
    kind says otherwise (:class:`Ranked`); the checks, a sample's format and a join follow."""

    name: str
    numeric = True  # its label columns hold numbers, not class labels
    ranked = False  # each id's rows list classes, best first

    def __repr__(self) -> str:
        return self.name

    def frame(self, ids: dict, label: str, predictions: np.ndarray, classes: list,
              metric: "Metric") -> tuple[pd.DataFrame, dict]:
        """The submission of (rows, outputs) ``predictions`` for ``ids`` ({id column: values})."""
        raise NotImplementedError

    def rows_per_id(self, classes: list) -> int:
        """How many rows of a submission each id has."""
        return 1

    def positive_class(self, classes: list):
        """The class whose probability a one-column submission holds, else None."""
        return None


class Values(Submits):
    name = "values"

    def frame(self, ids, label, predictions, classes, metric):
        return pd.DataFrame({**ids, label: predictions[:, 0]}), dict(
            label_column=label, positive=metric.domain == "positive", non_negative=metric.domain == "non-negative")


class Labels(Submits):
    name = "labels"
    numeric = False

    def frame(self, ids, label, predictions, classes, metric):
        return pd.DataFrame({**ids, label: [classes[i] for i in predictions.argmax(1)]}), dict(
            label_column=label, classes=classes)


class Probabilities(Submits):
    """P(positive class) in the label's column for two classes; one column per class for more
    (Kaggle's multiclass format)."""

    name = "probabilities"

    def frame(self, ids, label, predictions, classes, metric):
        if len(classes) == 2:
            return pd.DataFrame({**ids, label: predictions[:, 1]}), dict(label_column=label, probabilities=True)
        columns = [str(c) for c in classes]
        return pd.DataFrame({**ids, **dict(zip(columns, predictions.T))}), dict(label_column=columns,
                                                                                probabilities=True)

    def positive_class(self, classes: list):
        return classes[-1] if len(classes) == 2 else None


class Ranked(Submits):
    """Each id's ``k`` most probable classes, best first, as ``k`` rows ``id,label`` (MAP@k's
    format); all the classes, ranked, when there are fewer than ``k``."""

    numeric = False
    ranked = True

    def __init__(self, k: int):
        self.k, self.name = k, f"{k} ranked labels"

    def rows_per_id(self, classes: list) -> int:
        return min(self.k, len(classes))

    def frame(self, ids, label, predictions, classes, metric):
        k = self.rows_per_id(classes)
        best = np.argsort(-predictions, axis=1, kind="stable")[:, :k]  # ties: the first class first
        frame = pd.DataFrame(ids)
        frame = frame.loc[frame.index.repeat(k)].reset_index(drop=True)
        frame[label] = [classes[i] for i in best.ravel()]
        return frame, dict(label_column=label, classes=classes, rows_per_id=k)


VALUES, LABELS, PROBABILITIES = Values(), Labels(), Probabilities()


@dataclass(frozen=True)
class Metric:
    """One competition metric.

    ``space`` maps predictions (and ``label_space`` labels) to where the metric compares them;
    ``term`` is the per-row loss there and ``finish`` turns the mean term into the score. A
    metric that is not a mean of row terms (AUC) gives ``whole`` instead. ``domain`` is what
    labels and predictions must be: None, ``positive`` or ``non-negative``.
    """

    name: str
    task: Task
    higher_is_better: bool
    submits: Submits
    term: Callable | None = None
    finish: Callable = _same
    whole: Callable | None = None
    space: Callable = _same
    unspace: Callable = _same
    label_space: Callable = _same
    domain: str | None = None
    binary: bool = False
    log: tuple[Callable, Callable] = (torch.log, torch.exp)  # where a regressor with a log target learns, and back
    ranks: bool = False  # only the order of the predictions counts (a model may stop early on it, not on its loss)

    def outside_domain(self, values: np.ndarray) -> np.ndarray:
        """Where ``values`` fall outside what this metric takes (positive or non-negative)."""
        if self.domain == "positive":
            return values <= 0
        if self.domain == "non-negative":
            return values < 0
        return np.zeros(len(values), dtype=bool)

    def score(self, pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The metric of ``pred`` (..., rows[, classes]) against ``labels`` (rows,), per leading index."""
        if self.whole is not None:
            return self.whole(pred, labels)
        return self.finish(self.term(self.space(pred), self.label_space(labels)).mean(-1))

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    def sort_key(self, value: float) -> float:
        """Ascending order of this key is best first."""
        return -value if self.higher_is_better else value


def _log_clamped(values: torch.Tensor) -> torch.Tensor:
    return values.clamp_min(1).log()


def _log1p_clamped(values: torch.Tensor) -> torch.Tensor:
    return values.clamp_min(0).log1p()


METRICS: dict[str, Metric] = {}  # by name, in the order registered


def register(metric: Metric) -> Metric:
    """Make ``metric`` one a target can name (``metric = "NAME"`` in pipeline.toml). A metric in
    a module of its own calls this when imported, and one import line at the bottom of this
    file imports it: so every metric is known wherever metrics are, and a stage that scores
    with metrics has the module in its code (an edit to it makes the stage stale)."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is registered twice: rename one")
    if not metric.name or any(c.isspace() or c == ":" for c in metric.name):
        raise ValueError(f"metric name {metric.name!r} must be one word without ':' (which names a custom metric)")
    METRICS[metric.name] = metric
    return metric


REGRESSION, CLASSIFICATION = TASKS["regression"], TASKS["classification"]
for _metric in (
    Metric("rmse", REGRESSION, False, VALUES, _squared, torch.sqrt),
    # house's (d2l 4.10): RMSE between log(max(prediction, 1)) and log(label)
    Metric("log_rmse", REGRESSION, False, VALUES, _squared, torch.sqrt, space=_log_clamped,
           unspace=torch.exp, label_space=torch.log, domain="positive"),
    # Kaggle's RMSLE: RMSE between log1p(prediction) and log1p(label); a label of 0 is fine there
    Metric("rmsle", REGRESSION, False, VALUES, _squared, torch.sqrt, space=_log1p_clamped,
           unspace=torch.expm1, label_space=torch.log1p, domain="non-negative", log=(torch.log1p, torch.expm1)),
    Metric("mae", REGRESSION, False, VALUES, _absolute),
    Metric("accuracy", CLASSIFICATION, True, LABELS, _hits),
    Metric("logloss", CLASSIFICATION, False, PROBABILITIES, _surprise),
    Metric("auc", CLASSIFICATION, True, PROBABILITIES, whole=auc, binary=True, ranks=True),
):
    register(_metric)

# what a custom metric's submission may hold: submits = "NAME"
SUBMITS = {kind.name: kind for kind in (VALUES, LABELS, PROBABILITIES)}


def metric_for(name: str, task: str | None = None, *, where: str = "metric", higher_is_better: bool | None = None,
               submits: str | None = None) -> Metric:
    """The metric called ``name``, checked against ``task``; a bad choice is a one-line error.
    ``module:function`` (or ``path/file.py:function``) is a custom metric of that task, whose
    direction ``higher_is_better`` must be given (see :func:`custom_metric`)."""
    if ":" in name:
        return custom_metric(name, task or "regression", higher_is_better, submits, where)
    metric = METRICS.get(name)
    if metric is None:
        raise ConfigError(f"{where}: unknown metric {name!r} (choose from {', '.join(METRICS)})")
    if task is not None and metric.task.name != task:
        fits = ", ".join(m.name for m in METRICS.values() if m.task.name == task)
        raise ConfigError(f"{where}: metric {name!r} does not fit task {task!r} (choose from {fits})")
    return metric


def custom_metric(reference: str, task: str, higher_is_better: bool | None, submits: str | None,
                  where: str = "metric") -> Metric:
    """A competition's own metric: ``function(y_true, y_pred) -> float`` in a module
    (``package.module:function``) or a file (``path/file.py:function``). ``y_true`` is the labels
    (class indices for classification, the positive class 1); ``y_pred`` is what the submission
    holds (``submits``; by default values for a regression, probabilities for classification):
    values, P(positive) for two classes, (rows, classes) for more, or class indices for labels."""
    if not isinstance(higher_is_better, bool):
        raise ConfigError(f"{where}: a custom metric needs its direction: higher_is_better = true or false")
    task_ = TASKS[task]
    kind = submits or ("values" if task_.continuous else "probabilities")
    if kind not in SUBMITS or (kind == "values") != task_.continuous:
        fits = "values" if task_.continuous else "labels or probabilities"
        raise ConfigError(f"{where}: submits = {kind!r} does not fit task {task!r} (choose {fits})")
    function = _load(reference, where)
    return Metric(reference, task_, higher_is_better, SUBMITS[kind], whole=_per_model(function, task_, kind))


_LOADED: dict[str, Callable] = {}


def _load(reference: str, where: str) -> Callable:
    if reference not in _LOADED:
        import importlib
        import importlib.util

        module_name, _, function_name = reference.rpartition(":")
        try:
            if module_name.endswith(".py"):
                spec = importlib.util.spec_from_file_location(f"pipeline_metric_{len(_LOADED)}", module_name)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(module_name)
        except (OSError, ImportError, SyntaxError) as exc:
            raise ConfigError(f"{where}: cannot load {module_name} for metric {reference!r}: "
                              f"{str(exc).splitlines()[0]}") from None
        function = getattr(module, function_name, None)
        if not callable(function):
            raise ConfigError(f"{where}: {module_name} has no function {function_name!r}")
        _LOADED[reference] = function
    return _LOADED[reference]


def _per_model(function: Callable, task: Task, kind: str) -> Callable:
    """``whole`` for a custom metric: the function of numpy arrays, once per leading index."""

    def score(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        leading = pred.shape[: pred.dim() - (1 if task.continuous else 2)]
        y = labels.cpu().numpy()
        flat = pred.detach().reshape(-1, *pred.shape[len(leading):]).cpu().numpy()
        if kind == "labels":
            flat = flat.argmax(-1)
        elif kind == "probabilities" and flat.shape[-1] == 2:
            flat = flat[..., 1]
        return torch.tensor([float(function(y, p)) for p in flat], dtype=torch.float64).reshape(leading)

    return score


# Metrics in modules of their own (each calls register when imported), one import line each;
# after everything above, which they import:
from pipeline import map_at_k  # noqa: E402,F401
