"""Tasks: what a label is and how a model learns it. A :class:`Task` encodes the labels, says
how many outputs a model needs, turns a model's raw outputs into predictions and gives the
loss's gradient; metrics, members and the trainer ask it instead of testing a task's name.

Predictions are always ``(..., rows, outputs)``: one value column for regression, one
probability column per class for classification; :meth:`Task.scored` gives a metric its input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.errors import ConfigError, DataError, ParamError, shown


class Task(ABC):
    name: str
    stratify: bool  # folds keep each class's share
    default_metric: str
    continuous: bool  # labels are values that a transform may scale (not classes)
    residual_scale: float  # d loss / d raw output = residual_scale * residual
    ignores: frozenset = frozenset()  # members' training params that mean nothing for this task

    def __repr__(self) -> str:
        return self.name

    @abstractmethod
    def encode(self, labels: pd.Series, positive=None, where: str = "labels") -> tuple[np.ndarray, list]:
        """Labels as a model learns them, and the classes (empty for regression)."""

    def learns_in_log(self, log_target: bool | str, metric, labels: torch.Tensor) -> bool:
        """Whether a model learns the labels in ``metric.log`` space: only a regressor can."""
        return False

    @abstractmethod
    def checked(self, labels: pd.Series, metric, where: str) -> pd.Series:
        """The training labels, checked for what ``metric`` takes (``where`` names them in errors)."""

    @abstractmethod
    def outputs(self, classes: list) -> int:
        """A model's output columns."""

    @abstractmethod
    def scored(self, predictions: torch.Tensor) -> torch.Tensor:
        """``(..., rows, outputs)`` predictions as a metric of this task takes them."""

    @abstractmethod
    def predictions(self, raw: torch.Tensor) -> torch.Tensor:
        """A network's raw outputs ``(..., outputs)`` in the labels' scale (class probabilities)."""

    @abstractmethod
    def train_targets(self, y: torch.Tensor, outputs: int, smoothing: float = 0.0) -> torch.Tensor:
        """(rows, outputs) targets of the loss for (already transformed) labels ``y``."""

    @abstractmethod
    def residual(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d loss / d raw output over :attr:`residual_scale`, up to each row's weight, in place
        of ``out`` where it can be."""

    @abstractmethod
    def problem(self, outputs: int) -> str:
        """What a library is asked to learn: ``regression``, ``binary`` or ``multiclass`` (AutoGluon's
        problem types); each family names its own objective from it."""

    @abstractmethod
    def as_outputs(self, values: np.ndarray, outputs: int, columns=None) -> np.ndarray:
        """A library's predictions as (rows, outputs): values (rows,) for a regression; for a
        classification, P(the last class) (rows,) or probabilities (rows, k) of the output
        ``columns`` (every class when None; classes absent from a model's rows get 0)."""

    @abstractmethod
    def compact(self, predictions: np.ndarray) -> np.ndarray:
        """(rows, outputs) predictions without the column the others determine: a binary
        classifier's P(positive) alone; what a model stacked on them takes."""


class Regression(Task):
    name = "regression"
    stratify = False
    default_metric = "rmse"
    continuous = True
    residual_scale = 2.0  # the squared error's
    ignores = frozenset({"label_smoothing"})

    def learns_in_log(self, log_target: bool | str, metric, labels: torch.Tensor) -> bool:
        """``log_target``: True (the labels must allow it), False, or ``auto``: log space whenever
        the labels allow it (prices: diamonds' MLP RMSE 587 in log space, 681 on raw prices).
        log1p takes any of rmsle's (non-negative) labels, a log only positive ones."""
        allowed = metric.domain == "non-negative" or bool((labels > 0).all())
        if log_target == "auto":
            return allowed
        if log_target and not allowed:
            raise ParamError("log_target", True, "needs positive labels (or metric rmsle)")
        return bool(log_target)

    def encode(self, labels: pd.Series, positive=None, where: str = "labels") -> tuple[np.ndarray, list]:
        return labels.to_numpy(dtype=np.float32), []

    def checked(self, labels: pd.Series, metric, where: str) -> pd.Series:
        numeric = pd.to_numeric(labels, errors="coerce")
        if numeric.isna().any():
            bad = numeric.isna()
            raise DataError(f"{where} holds non-numeric {shown(labels[bad].iloc[0])!r} at line {_line(bad)}")
        values = numeric.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{where} is infinite at line {_line(~np.isfinite(values))}")
        bad = metric.outside_domain(values)
        if bad.any():
            raise DataError(f"{where} is {values[bad][0]:g} at line {_line(bad)}; "
                            f"{metric.name} needs {metric.domain} labels (use metric rmse)")
        return numeric.astype(np.float64)

    def outputs(self, classes: list) -> int:
        return 1

    def scored(self, predictions: torch.Tensor) -> torch.Tensor:
        return predictions[..., 0]

    def predictions(self, raw: torch.Tensor) -> torch.Tensor:
        return raw

    def train_targets(self, y: torch.Tensor, outputs: int, smoothing: float = 0.0) -> torch.Tensor:
        return y.float().view(-1, 1)

    def residual(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return out.sub_(target)

    def problem(self, outputs: int) -> str:
        return "regression"

    def as_outputs(self, values: np.ndarray, outputs: int, columns=None) -> np.ndarray:
        return np.asarray(values).reshape(len(values), 1)

    def compact(self, predictions: np.ndarray) -> np.ndarray:
        return predictions


class Classification(Task):
    name = "classification"
    stratify = True
    default_metric = "accuracy"
    continuous = False
    residual_scale = 1.0  # cross-entropy's: softmax - one-hot
    ignores = frozenset({"log_target", "standardize"})

    def encode(self, labels: pd.Series, positive=None, where: str = "labels") -> tuple[np.ndarray, list]:
        """Class indices and the classes: sorted, with the ``positive`` class moved last
        (column 1 of a binary target's probabilities is then P(positive))."""
        codes, uniques = pd.factorize(labels, sort=True)
        classes = [shown(u) for u in uniques]
        if positive is None:
            return codes.astype(np.int64), classes
        matches = [i for i, c in enumerate(classes) if c == positive or str(c) == str(positive)]
        if not matches:
            raise DataError(f"{where}: positive class {positive!r} is not a value of the label "
                            f"(values: {', '.join(map(str, classes[:6]))})")
        order = [i for i in range(len(classes)) if i != matches[0]] + matches
        remap = np.empty(len(classes), dtype=np.int64)
        remap[order] = np.arange(len(classes))
        return remap[codes], [classes[i] for i in order]

    def checked(self, labels: pd.Series, metric, where: str) -> pd.Series:
        classes = labels.unique()
        if len(classes) < 2:
            raise DataError(f"{where} holds one class ({shown(classes[0])!r}): there is nothing to learn; "
                            "a classifier needs rows of two classes or more")
        if metric.binary and len(classes) != 2:
            shown_classes = ", ".join(sorted(map(str, classes))[:6])
            raise DataError(f"{where} has {len(classes)} classes ({shown_classes}); metric {metric.name} is for "
                            "two classes; use logloss or accuracy")
        return labels

    def outputs(self, classes: list) -> int:
        return len(classes)

    def scored(self, predictions: torch.Tensor) -> torch.Tensor:
        return predictions

    def predictions(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.softmax(-1)

    def train_targets(self, y: torch.Tensor, outputs: int, smoothing: float = 0.0) -> torch.Tensor:
        return F.one_hot(y, outputs).float() * (1 - smoothing) + smoothing / outputs

    def residual(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # the softmax is over the outputs' axis 2 of the trainer's (G, C, outputs, rows) blocks
        return torch.softmax(out, 2).sub_(target)

    def problem(self, outputs: int) -> str:
        return "binary" if outputs == 2 else "multiclass"

    def as_outputs(self, values: np.ndarray, outputs: int, columns=None) -> np.ndarray:
        values = np.asarray(values)
        if values.ndim == 1:
            return np.stack([1 - values, values], 1)
        out = np.zeros((len(values), outputs))
        out[:, slice(None) if columns is None else np.asarray(columns)] = values
        return out

    def compact(self, predictions: np.ndarray) -> np.ndarray:
        return predictions[:, 1:] if predictions.shape[1] == 2 else predictions


def _line(mask) -> int:
    """The CSV line of the first True in ``mask`` (line 1 is the header)."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 2


TASKS: dict[str, Task] = {task.name: task for task in (Regression(), Classification())}


def task_for(name: str, where: str = "task") -> Task:
    task = TASKS.get(name)
    if task is None:
        raise ConfigError(f"{where}: task {name!r} is not one of {', '.join(TASKS)}")
    return task
