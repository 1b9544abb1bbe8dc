"""Recipe members: every model family behind one small protocol.

``member.fit(data, rows)`` trains one model per row set (each fold's training rows, or every
row for the submission) and returns a :class:`Fitted` that predicts, scores and saves itself.
Cross-validation, the final fit, the blend and the checkpoint only ever call that protocol,
so a new family is one member class and one entry in :data:`LOADERS`.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Lasso, Ridge
from sklearn.svm import SVR

from pipeline.errors import DataError, ParamError, UsageError
from pipeline.metrics import Metric
from pipeline.tabular.ensemble import average
from pipeline.tabular.features import Features
from pipeline.tabular.stacked import StackedModel
from pipeline.tabular.trainer import TrainParams, fit, predict_raw, to_predictions


class TrainingSet:
    """A competition's features on the training device (and, for scikit-learn, as arrays)."""

    def __init__(self, features: Features, device: torch.device):
        self.features, self.device = features, device
        self.X, self.y = features.X.to(device), features.y.to(device)
        self.X_test = features.X_test.to(device)
        self.metric: Metric = features.spec.scorer
        self.n_out = max(1, len(features.classes))

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.features.X.numpy(), self.features.y.numpy()

    def check_log_target(self) -> None:
        if self.metric.task != "regression" or bool((self.features.y <= 0).any()):
            raise ParamError("log_target", True, "needs a regression target with positive labels")


class Fitted(ABC):
    """A member trained on G row sets: G models that predict, score and save together."""

    label: str
    metric: Metric
    seconds: float = 0.0
    failed_epoch: np.ndarray  # (G,): the first epoch with a non-finite loss, 0 if none

    @property
    def curves(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Per-epoch (epochs, G) train and valid metric, for members trained in epochs."""
        return None

    @abstractmethod
    def predict(self, X: torch.Tensor) -> torch.Tensor:
        """(G, rows, outputs): values for regression, class probabilities for classification."""

    @abstractmethod
    def state(self) -> dict:
        """Plain tensors and values (``torch.load(weights_only=True)`` safe); :func:`load_fitted`
        rebuilds the member from it."""

    def score(self, predictions: torch.Tensor, y: torch.Tensor, rows: list[torch.Tensor]) -> list[float]:
        """The metric of group g's ``predictions`` (from :meth:`predict`) on its ``rows[g]``."""
        return score_groups(predictions, y, rows, self.metric)


def score_groups(predictions: torch.Tensor, y: torch.Tensor, rows: list[torch.Tensor], metric: Metric) -> list[float]:
    """``metric`` of each group's (G, N, outputs) predictions on its own rows."""
    outputs = [p[r] if metric.task == "classification" else p[r, 0] for p, r in zip(predictions, rows)]
    return [float(metric.score(o, y[r])) for o, r in zip(outputs, rows)]


# ----------------------------------------------------------------------------- torch members

@dataclass(frozen=True)
class TorchMember:
    """A stacked torch model (linear or MLP): all row sets and ``seeds`` initialisations of it
    train as one :class:`StackedModel`."""

    params: TrainParams

    @property
    def label(self) -> str:
        return self.params.model

    def fit(self, data: TrainingSet, rows: list[torch.Tensor], *, valid_rows: list[torch.Tensor] | None = None,
            seeds: int = 1, seed: int = 0, on_epoch: Callable[[int, int], None] | None = None) -> "TorchFitted":
        if self.params.log_target:
            data.check_log_target()
        result = fit(data.X, data.y, rows, [self.params] * seeds, metric=data.metric.name, valid_rows=valid_rows,
                     n_out=data.n_out, seed=seed, curves=valid_rows is not None, on_epoch=on_epoch)
        fitted = TorchFitted(result.model, result.configs, data.metric)
        fitted.seconds, fitted.failed_epoch = result.seconds, result.failed_epoch.max(1)
        fitted._curves = (result.train_curve.mean(2),
                          None if result.valid_curve is None else result.valid_curve.mean(2))
        return fitted


class TorchFitted(Fitted):
    def __init__(self, model: StackedModel, configs: list[TrainParams], metric: Metric):
        self.model, self.configs, self.metric = model, configs, metric
        self.label = configs[0].model
        self.failed_epoch = np.zeros(model.groups, dtype=int)
        self._curves = None

    @property
    def curves(self):
        return self._curves

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        raw = predict_raw(self.model, X.to(self.model.device))  # (G, N, seeds, outputs)
        predictions = to_predictions(raw, self.configs, self.metric.task)
        if self.metric.task == "classification":
            return predictions.mean(2)
        return average(predictions, self.metric, dim=2).unsqueeze(-1)

    def state(self) -> dict:
        return {"member": "torch", **self.model.state({"configs": [c.to_dict() for c in self.configs]})}

    @classmethod
    def from_state(cls, state: dict, metric: Metric, device: torch.device) -> "TorchFitted":
        return cls(StackedModel.from_state(state, device), [TrainParams.from_dict(c) for c in state["configs"]],
                   metric)


# ----------------------------------------------------------------------------- scikit-learn members

SKLEARN_MODELS = {"lasso": Lasso, "ridge": Ridge, "svr": SVR, "gbm": HistGradientBoostingRegressor}


@dataclass(frozen=True)
class SklearnMember:
    """A scikit-learn regressor as a recipe member, fit per row set like the others.

    They add what Adam-trained torch models do not give: the exact L1 path of a Lasso, an RBF
    support-vector machine, and boosted trees, which do not extrapolate past the training range.
    ``options`` go to the estimator as keyword arguments; training is on log(label) when
    ``log_target``.
    """

    model: str
    options: tuple = ()
    log_target: bool = True

    @property
    def label(self) -> str:
        return self.model

    def estimators(self, X: np.ndarray, y: np.ndarray, seeds: int = 1) -> list:
        """Fit on (X, y). A member with a ``random_state`` option (boosted trees with feature
        subsampling) is fit ``seeds`` times from random_state, random_state + 1, …; others once."""
        options = dict(self.options)
        first = options.get("random_state")
        runs = [options] if first is None else [{**options, "random_state": first + i} for i in range(seeds)]
        target = np.log(y) if self.log_target else y
        fitted = []
        for kwargs in runs:
            try:
                fitted.append(SKLEARN_MODELS[self.model](**kwargs).fit(X, target))
            except TypeError as exc:
                raise UsageError(f"ensemble member {self.model}: {exc}") from None
        return fitted

    def predict_with(self, estimators: list, X: np.ndarray) -> np.ndarray:
        """The seeds' mean prediction, in log space with ``log_target``."""
        out = np.mean([e.predict(X) for e in estimators], axis=0)
        return np.exp(out) if self.log_target else out

    def fit_predict(self, X: np.ndarray, y: np.ndarray, X_eval: np.ndarray, seeds: int = 1) -> np.ndarray:
        return self.predict_with(self.estimators(X, y, seeds), X_eval)

    def fit(self, data: TrainingSet, rows: list[torch.Tensor], *, valid_rows=None, seeds: int = 1, seed: int = 0,
            on_epoch=None) -> "SklearnFitted":
        if data.metric.task != "regression":
            raise UsageError(f"scikit-learn ensemble members ({', '.join(SKLEARN_MODELS)}) are for regression targets")
        if self.log_target:
            data.check_log_target()
        started = time.perf_counter()
        X, y = data.arrays
        groups = [self.estimators(X[r.cpu()], y[r.cpu()], seeds) for r in rows]
        fitted = SklearnFitted(self, groups, data)
        fitted.seconds = time.perf_counter() - started
        return fitted


def _fingerprint(X: torch.Tensor) -> str:
    return hashlib.sha1(X.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class SklearnFitted(Fitted):
    """scikit-learn estimators cannot be saved in a weights-only checkpoint, so their state is
    their predictions for the competition's test rows (see :class:`SavedPredictions`)."""

    def __init__(self, member: SklearnMember, groups: list[list], data: TrainingSet):
        self.member, self.groups, self.data = member, groups, data
        self.label, self.metric = member.label, data.metric
        self.failed_epoch = np.zeros(len(groups), dtype=int)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        values = np.stack([self.member.predict_with(estimators, X.cpu().numpy()) for estimators in self.groups])
        return torch.from_numpy(values).to(X.device, torch.float32).unsqueeze(-1)

    def state(self) -> dict:
        return {"member": "predictions", "label": self.label, "test_predictions": self.predict(self.data.X_test).cpu(),
                "test_sha1": _fingerprint(self.data.X_test)}


@dataclass
class SavedPredictions(Fitted):
    """A member restored from its saved test-set predictions: it predicts those rows only."""

    label: str
    predictions: torch.Tensor
    test_sha1: str
    metric: Metric
    failed_epoch: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=int))

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        if _fingerprint(X) != self.test_sha1:
            raise DataError(f"ensemble member {self.label} was saved as its predictions for other test "
                            "features; run `pipeline train` again")
        return self.predictions.to(X.device)

    def state(self) -> dict:
        return {"member": "predictions", "label": self.label, "test_predictions": self.predictions,
                "test_sha1": self.test_sha1}

    @classmethod
    def from_state(cls, state: dict, metric: Metric, device: torch.device) -> "SavedPredictions":
        return cls(state["label"], state["test_predictions"].to(device), state["test_sha1"], metric)


LOADERS = {"torch": TorchFitted.from_state, "predictions": SavedPredictions.from_state}


def load_fitted(state: dict, metric: Metric, device: torch.device) -> Fitted:
    """A fitted member from its :meth:`Fitted.state`; an unknown or damaged state raises
    KeyError, TypeError or ValueError (the checkpoint reader turns them into one line)."""
    return LOADERS[state["member"]](state, metric, device)


def recipe_members(base: TrainParams, ensemble: list[dict]) -> list:
    """The members of a recipe: ``base`` alone, or one per ``ensemble`` table of overrides
    (``{model = "lasso", alpha = 5e-4}`` makes a scikit-learn member)."""
    if not ensemble:
        return [TorchMember(base)]
    members = []
    for table in ensemble:
        if not isinstance(table, dict):
            raise UsageError(f"ensemble member {table!r} must be a table of params, e.g. {{model = \"mlp\"}}")
        if table.get("model") in SKLEARN_MODELS:
            options = {k: v for k, v in table.items() if k not in ("model", "log_target")}
            members.append(SklearnMember(table["model"], tuple(sorted(options.items())),
                                         table.get("log_target", True)))
        else:
            members.append(TorchMember(TrainParams.from_dict({**base.to_dict(), **table})))
    return members
