"""Features fit on the labels, inside each fold: a target encoding of each high-cardinality
category (scikit-learn's TargetEncoder) and, per free-text column, the predictions of a linear
model on its TF-IDF terms (stacked, as AutoGluon stacks models on out-of-fold predictions).

For a row set R (a fold's training rows, or every row for the submission) the encoders are
fit on R's labels only; R's own rows get out-of-fold values from a K-fold within R, so a
model trained on R never sees a row's value computed from its own label, and every other row
(the fold's validation rows, the test rows) gets the value of the encoders fit on all of R. The
CV stays honest: a fold's validation labels reach neither its features nor its models.

The columns are standardized per row set (on R's values), so every member can take them. The
task says what is learned (:meth:`pipeline.tasks.Task.problem`): values by a ridge, classes by
a logistic regression, whose probabilities lose the column the others determine
(:meth:`pipeline.tasks.Task.compact`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.preprocessing import TargetEncoder

from pipeline import checkpoints
from pipeline.metrics import Metric
from pipeline.tabular.target_transform import TargetTransform
from pipeline.tasks import Task, task_for

INNER_FOLDS = 5
# A logistic regression's C on TF-IDF terms (strikes' remarks alone, 5-fold AUC: C = 1 0.789,
# 4 0.789, 16 0.779); a ridge's alpha for values, on the same scale of penalty.
TEXT_C, TEXT_ALPHA = 1.0, 1.0
# Its solver: SAGA to a tolerance of 1e-3. On 22,000 six-class titles (45,000 terms) a 5-fold CV
# of it took 16.7 s with lbfgs (scikit-learn's default) and 5.6 s so, log-loss 0.6332 and
# 0.6335; on strikes' remarks 1.3 s and 1.4 s, AUC 0.7947 and 0.7950. lbfgs was 65% of that
# table's 139 s CV, which took 65 s so (log-loss 0.5828 -> 0.5832); strikes' CV at fold seeds
# 0, 1, 2: 0.9048, 0.9039, 0.9035 -> 0.9045, 0.9041, 0.9040. C = 1.5 scored the titles better
# (0.5788) and strikes worse (0.9041, 0.9042, 0.9034): C stays 1.
TEXT_SOLVER = {"solver": "saga", "tol": 1e-3, "max_iter": 1000}
# scikit-learn's TargetEncoder's target_type for each problem a task names
TARGET_TYPES = {"regression": "continuous", "binary": "binary", "multiclass": "multiclass"}


class InFold:
    """The encoders of G row sets. ``values(codes, texts)`` gives any rows' (G, rows, k) columns."""

    def __init__(self, groups: list[dict], task: Task, outputs: int):
        self.groups, self.task, self.outputs = groups, task, outputs

    def values(self, codes: np.ndarray, texts: list) -> torch.Tensor:
        return torch.stack([_standardized(_encode(group, codes, texts, self.task, self.outputs), group)
                            for group in self.groups])

    def state(self) -> dict:
        return {"groups": checkpoints.pack(self.groups), "task": self.task.name, "outputs": self.outputs}

    @classmethod
    def from_state(cls, state: dict) -> "InFold":
        if "classes" in state:  # saved before the task was asked: 0 classes was a regression
            classes = state["classes"]
            return cls(checkpoints.unpack(state["groups"]), task_for("classification" if classes else "regression"),
                       classes or 1)
        return cls(checkpoints.unpack(state["groups"]), task_for(state["task"]), state["outputs"])


def width(codes: torch.Tensor | None, texts: list, task: Task, outputs: int) -> int:
    """The in-fold columns a table gets: per high-cardinality category and per text, one value
    (a class's share or probability for each class beyond the first two)."""
    per = task.compact(np.zeros((1, outputs))).shape[1]
    return (0 if codes is None else codes.shape[1]) * per + len(texts) * per


def fit_infold(codes: torch.Tensor, texts: list, y: torch.Tensor, metric: Metric, outputs: int,
               rows: list[torch.Tensor], seed: int = 0) -> tuple[InFold, torch.Tensor]:
    """The encoders fit on each row set, and every training row's (G, N, k) values: out-of-fold
    within the row set, the fit encoders' elsewhere. ``metric``'s task says what is learned,
    with ``outputs`` columns of predictions."""
    codes, task = codes.numpy(), metric.task
    target = _target(y, metric)
    groups, values = [], []
    for rows_g in rows:
        inside = rows_g.cpu().numpy()
        group, oof = _fit_group(codes[inside], [t[inside] for t in texts], target[inside], task, outputs, seed)
        out = _encode(group, codes, texts, task, outputs)
        out[inside] = oof
        group["mean"], group["std"] = oof.mean(0), oof.std(0) + 1e-6
        groups.append(group)
        values.append(_standardized(out, group))
    return InFold(groups, task, outputs), torch.stack(values)


def _target(y: torch.Tensor, metric: Metric) -> np.ndarray:
    """What the encoders learn: class indices, or values in the log space when the labels allow it."""
    transform = TargetTransform.choose(metric, "auto", y)
    return transform.learned(y.double()).numpy() if transform.log else y.numpy()


def _fit_group(codes: np.ndarray, texts: list, y: np.ndarray, task: Task, outputs: int,
               seed: int) -> tuple[dict, np.ndarray]:
    split = (StratifiedKFold if task.stratify else KFold)(INNER_FOLDS, shuffle=True, random_state=seed)
    parts, group = [], {"encoder": None, "texts": []}
    if codes.shape[1]:
        encoder = TargetEncoder(target_type=TARGET_TYPES[task.problem(outputs)], cv=split)
        parts.append(encoder.fit_transform(codes, y))
        group["encoder"] = encoder
    for matrix in texts:
        model = Ridge(alpha=TEXT_ALPHA) if task.continuous else \
            LogisticRegression(C=TEXT_C, random_state=seed, **TEXT_SOLVER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            method = "predict" if task.continuous else "predict_proba"
            predictions = cross_val_predict(model, matrix, y, cv=split, method=method)
            parts.append(task.compact(task.as_outputs(predictions, outputs)))
            group["texts"].append(model.fit(matrix, y))
    return group, np.concatenate(parts, axis=1).astype(np.float32)


def _encode(group: dict, codes: np.ndarray, texts: list, task: Task, outputs: int) -> np.ndarray:
    """Any rows' in-fold columns by the encoders fit on a row set: the target encodings, then each
    text model's prediction (a value, P(class 1) for two classes, every class's probability for more)."""
    parts = [group["encoder"].transform(codes)] if group["encoder"] is not None else []
    for model, matrix in zip(group["texts"], texts):
        predictions = model.predict(matrix) if task.continuous else model.predict_proba(matrix)
        parts.append(task.compact(task.as_outputs(predictions, outputs)))
    return np.concatenate(parts, axis=1).astype(np.float32)


def _standardized(values: np.ndarray, group: dict) -> torch.Tensor:
    return torch.from_numpy(((values - group["mean"]) / group["std"]).astype(np.float32))
