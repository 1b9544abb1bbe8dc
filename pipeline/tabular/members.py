"""Recipe members: every model family behind one small protocol.

``member.fit(data, rows)`` trains one model per row set (each fold's training rows, or every
row for the submission) and returns a :class:`Fitted` that predicts, scores and saves itself.
Cross-validation, the final fit, the blend and the checkpoint only ever call that protocol,
so a new family is one member class, one entry in :data:`FAMILIES` and one in :data:`LOADERS`.

A member that picks its own training length (the best epoch or boosting round on an inner
split of its rows) reports it as ``Fitted.budget``; the final fit on every row is given the
mean of the folds' budgets, so no row is held out of the model that is submitted.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.svm import SVR

from pipeline.errors import DataError, ParamError, UsageError
from pipeline.metrics import Metric, log_space
from pipeline.progress import Progress, Step
from pipeline.tabular.features import Features
from pipeline.tabular.stacked import StackedModel
from pipeline.tabular.trainer import TrainParams, average_submodels, fit, log_allowed, predict_raw, to_predictions


@dataclass
class Inputs:
    """Rows as each family wants them: ``dense`` (scaled numbers and one-hot categories) for
    torch and linear models, ``native`` (raw numbers, category codes, NaN) for trees."""

    dense: torch.Tensor
    native: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.dense)


class TrainingSet:
    """A competition's features on the training device (and, for scikit-learn, as arrays)."""

    def __init__(self, features: Features, device: torch.device):
        self.features, self.device = features, device
        self.X, self.y = features.X.to(device), features.y.to(device)
        self.train = Inputs(self.X, features.native)
        self.test = Inputs(features.X_test.to(device), features.native_test)
        self.metric: Metric = features.spec.scorer
        self.n_out = max(1, len(features.classes))

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return self.features.X.numpy(), self.features.y.numpy()

    def check_log_target(self) -> None:
        if not self.log_allowed:
            raise ParamError("log_target", True, "needs a regression target with positive labels")

    @cached_property
    def log_allowed(self) -> bool:
        return log_allowed(self.features.y, self.metric)

    def learns_in_log(self, log_target: bool | str) -> bool:
        """A regressor's ``log_target``: True (the labels must allow it), False, or ``auto``:
        log space whenever the labels allow it (prices: diamonds' MLP RMSE 587 in log space, 681
        on raw prices). Classifiers never do."""
        if log_target == "auto":
            return self.log_allowed
        if log_target:
            self.check_log_target()
        return bool(log_target)

    def fit_target(self, y: np.ndarray, log_target: bool) -> np.ndarray:
        """Labels as a regressor learns them: in log space with ``log_target``, else as they are."""
        return log_space(self.metric)[0](torch.from_numpy(y).double()).numpy() if log_target else y

    def from_target(self, values: np.ndarray, log_target: bool) -> np.ndarray:
        return log_space(self.metric)[1](torch.from_numpy(values).double()).numpy() if log_target else values


class Fitted(ABC):
    """A member trained on G row sets: G models that predict, score and save together."""

    label: str
    metric: Metric
    seconds: float = 0.0
    failed_epoch: np.ndarray  # (G,): the first epoch with a non-finite loss, 0 if none
    budget: float | None = None  # the epochs or boosting rounds it chose, mean over its row sets

    @property
    def curves(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Per-epoch (epochs, G) train and valid metric, for members trained in epochs."""
        return None

    @abstractmethod
    def predict(self, inputs: Inputs) -> torch.Tensor:
        """(G, rows, outputs) on the device of ``inputs.dense``: values for regression, class
        probabilities for classification."""

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


def _mean_budget(values) -> float | None:
    values = [v for v in values if v]
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------- torch members

@dataclass(frozen=True)
class TorchMember:
    """A stacked torch model (linear or MLP): all row sets, and its submodels times ``seeds``
    initialisations, train as one :class:`StackedModel`, and its prediction is their mean."""

    params: TrainParams

    @property
    def label(self) -> str:
        return self.params.model

    def fit(self, data: TrainingSet, rows: list[torch.Tensor], *, valid_rows: list[torch.Tensor] | None = None,
            seeds: int = 1, seed: int = 0, progress: Progress = Progress(),
            budget: float | None = None) -> "TorchFitted":
        params = self.params.with_(submodels=self.params.submodels * seeds,
                                   log_target=data.learns_in_log(self.params.log_target))
        if budget is not None:  # the epochs the folds chose on their inner splits, for every row
            params = params.with_(epochs=max(1, round(budget)), inner_valid=0.0)
        step = progress.step(self.label, params.epochs, "epoch", data.metric.higher_is_better)
        result = fit(data.X, data.y, rows, [params], metric=data.metric.name, valid_rows=valid_rows,
                     n_out=data.n_out, seed=seed, curves=valid_rows is not None,
                     on_epoch=lambda epoch, epochs, curves: step.advance(1, curves))
        step.close()
        fitted = TorchFitted(result.model, result.configs, data.metric)
        fitted.seconds, fitted.failed_epoch = result.seconds, result.failed_epoch[:, 0]
        if result.best_epoch is not None:
            fitted.budget = _mean_budget(result.best_epoch[:, 0])
        fitted._curves = (result.train_curve[:, :, 0],
                          None if result.valid_curve is None else result.valid_curve[:, :, 0])
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

    def predict(self, inputs: Inputs) -> torch.Tensor:
        raw = predict_raw(self.model, inputs.dense.to(self.model.device))  # (G, N, columns, outputs)
        predictions = to_predictions(raw, self.configs, self.metric)
        mean = average_submodels(predictions, self.configs[0].submodels, self.metric, 2).squeeze(2)
        return (mean if self.metric.task == "classification" else mean.unsqueeze(-1)).to(inputs.dense.device)

    def state(self) -> dict:
        return {"member": "torch", **self.model.state({"configs": [c.to_dict() for c in self.configs]})}

    @classmethod
    def from_state(cls, state: dict, metric: Metric, device: torch.device) -> "TorchFitted":
        return cls(StackedModel.from_state(state, device), [TrainParams.from_dict(c) for c in state["configs"]],
                   metric)


# ----------------------------------------------------------------------------- scikit-learn members

def _ridge_cv(**options):
    """Ridge with its penalty chosen by efficient leave-one-out CV over a wide grid."""
    return RidgeCV(alphas=options.pop("alphas", np.logspace(-3, 4, 15)), **options)


def _logistic_cv(**options):
    """Logistic regression with its penalty chosen by a 3-fold CV of the log-loss (inside the
    rows it is given). On benefits with 32 quantile splines per column it scored AUC 0.6775 in
    1.7 s, where LogisticRegression's default C = 1 scored 0.659; C above 10 took 40 s to converge
    and was never chosen."""
    defaults = dict(Cs=np.logspace(-3, 1, 9), cv=3, tol=1e-3, scoring="neg_log_loss", max_iter=2000,
                    l1_ratios=(0.0,), use_legacy_attributes=False)
    return LogisticRegressionCV(**{**defaults, **options})


# model -> task -> estimator; "glm" is the linear model of each task
SKLEARN_MODELS = {
    "lasso": {"regression": Lasso},
    "ridge": {"regression": Ridge},
    "svr": {"regression": SVR},
    "gbm": {"regression": HistGradientBoostingRegressor, "classification": HistGradientBoostingClassifier},
    "glm": {"regression": _ridge_cv, "classification": _logistic_cv},
    "logistic": {"classification": LogisticRegression},
}


@dataclass(frozen=True)
class SklearnMember:
    """A scikit-learn estimator as a recipe member, fit per row set like the others, on the
    dense features.

    They add what Adam-trained torch models do not give: the exact L1 path of a Lasso, an RBF
    support-vector machine, a linear model with its penalty cross-validated, and boosted trees,
    which do not extrapolate past the training range. ``options`` go to the estimator as
    keyword arguments; a regressor learns in log space when ``log_target``.
    """

    model: str
    options: tuple = ()
    log_target: bool | str = True

    @property
    def label(self) -> str:
        return self.model

    def _factory(self, task: str):
        factory = SKLEARN_MODELS[self.model].get(task)
        if factory is None:
            raise UsageError(f"ensemble member {self.model} is for {' and '.join(SKLEARN_MODELS[self.model])} "
                             f"targets, not {task}")
        return factory

    def runs(self, seeds: int) -> list[dict]:
        """The estimators' options: a member with a ``random_state`` option (boosted trees with
        feature subsampling) is fit ``seeds`` times from random_state, random_state + 1, …; others once."""
        options = dict(self.options)
        first = options.get("random_state")
        return [options] if first is None else [{**options, "random_state": first + i} for i in range(seeds)]

    def estimators(self, X: np.ndarray, y: np.ndarray, seeds: int = 1, task: str = "regression",
                   step: Step = Step()) -> list:
        """Fit on (X, y), once per run."""
        factory = self._factory(task)
        fitted = []
        for kwargs in self.runs(seeds):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    fitted.append(factory(**kwargs).fit(X, y))
            except TypeError as exc:
                raise UsageError(f"ensemble member {self.model}: {exc}") from None
            step.advance()
        return fitted

    def fit_predict(self, X: np.ndarray, y: np.ndarray, X_eval: np.ndarray, seeds: int = 1) -> np.ndarray:
        """A regressor's predictions for ``X_eval`` after fitting (X, log y): its seeds' geometric mean."""
        estimators = self.estimators(X, np.log(y) if self.log_target else y, seeds)
        out = np.mean([e.predict(X_eval) for e in estimators], axis=0)
        return np.exp(out) if self.log_target else out

    def fit(self, data: TrainingSet, rows: list[torch.Tensor], *, valid_rows=None, seeds: int = 1, seed: int = 0,
            progress: Progress = Progress(), budget=None) -> "SklearnFitted":
        task = data.metric.task
        self._factory(task)
        log_target = task == "regression" and data.learns_in_log(self.log_target)
        started = time.perf_counter()
        X, y = data.arrays
        target = data.fit_target(y, log_target) if task == "regression" else y
        step = progress.step(self.label, len(rows) * len(self.runs(seeds)), "fit")
        groups = [self.estimators(X[r.cpu()], target[r.cpu()], seeds, task, step) for r in rows]
        step.close()
        fitted = SklearnFitted(self, groups, data, log_target)
        if task == "regression":
            fitted.ranges = [(target[r.cpu()].min(), target[r.cpu()].max()) for r in rows]
        fitted.seconds = time.perf_counter() - started
        return fitted


def _fingerprint(X: torch.Tensor) -> str:
    return hashlib.sha1(X.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def _probabilities(estimator, X: np.ndarray, classes: int) -> np.ndarray:
    """predict_proba in every class's column, 0 for a class absent from the estimator's rows."""
    out = np.zeros((len(X), classes))
    out[:, estimator.classes_] = estimator.predict_proba(X)
    return out


class SavedAsPredictions(Fitted):
    """scikit-learn estimators cannot be saved in a weights-only checkpoint: their state is
    their predictions for the competition's test rows (see :class:`SavedPredictions`)."""

    data: TrainingSet

    def state(self) -> dict:
        return {"member": "predictions", "label": self.label,
                "test_predictions": self.predict(self.data.test).cpu(), "test_sha1": _fingerprint(self.data.test.dense)}


class SklearnFitted(SavedAsPredictions):
    def __init__(self, member: SklearnMember, groups: list[list], data: TrainingSet, log_target: bool):
        self.member, self.groups, self.data, self.log_target = member, groups, data, log_target
        self.label, self.metric = member.label, data.metric
        self.failed_epoch = np.zeros(len(groups), dtype=int)
        self.ranges = [(-np.inf, np.inf)] * len(groups)  # each group's training targets: predictions stay inside

    def _predict_one(self, estimators: list, X: np.ndarray, low: float, high: float) -> np.ndarray:
        if self.metric.task == "classification":
            return np.mean([_probabilities(e, X, self.data.n_out) for e in estimators], axis=0)
        out = np.mean([e.predict(X) for e in estimators], axis=0).clip(low, high)  # the seeds' mean in log space
        return self.data.from_target(out, self.log_target)[:, None]

    def predict(self, inputs: Inputs) -> torch.Tensor:
        X = inputs.dense.cpu().numpy()
        values = np.stack([self._predict_one(estimators, X, *limits) for estimators, limits in zip(self.groups, self.ranges)])
        return torch.from_numpy(values).to(inputs.dense.device, torch.float32)


@dataclass
class SavedPredictions(Fitted):
    """A member restored from its saved test-set predictions: it predicts those rows only."""

    label: str
    predictions: torch.Tensor
    test_sha1: str
    metric: Metric
    failed_epoch: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=int))

    def predict(self, inputs: Inputs) -> torch.Tensor:
        if _fingerprint(inputs.dense) != self.test_sha1:
            raise DataError(f"ensemble member {self.label} was saved as its predictions for other test "
                            "features; run `pipeline train` again")
        return self.predictions.to(inputs.dense.device)

    def state(self) -> dict:
        return {"member": "predictions", "label": self.label, "test_predictions": self.predictions,
                "test_sha1": self.test_sha1}

    @classmethod
    def from_state(cls, state: dict, metric: Metric, device: torch.device) -> "SavedPredictions":
        return cls(state["label"], state["test_predictions"].to(device), state["test_sha1"], metric)


# ----------------------------------------------------------------------------- LightGBM

LIGHTGBM_DEFAULTS = {
    "learning_rate": 0.05, "num_leaves": 31, "min_child_samples": 20, "subsample": 0.8, "subsample_freq": 1,
    "colsample_bytree": 0.8, "reg_lambda": 1.0, "n_estimators": 5000, "verbose": -1,
}
EARLY_STOPPING = 200  # boosting rounds without improvement on the inner split


@dataclass(frozen=True)
class LightGBMMember:
    """LightGBM's gradient-boosted trees on the native columns: categories split natively, NaN
    routed by the trees. Each row set holds out ``inner_valid`` of its rows to stop boosting
    at the best round; regressors learn in log space with ``log_target``."""

    options: tuple = ()
    log_target: bool | str = True
    inner_valid: float = 0.15

    label = "lightgbm"

    def _params(self, data: TrainingSet, seed: int) -> dict:
        params = {**LIGHTGBM_DEFAULTS, **dict(self.options), "random_state": seed}
        if data.metric.task == "classification":
            binary = data.n_out == 2
            params["objective"] = "binary" if binary else "multiclass"
            if not binary:
                params["num_class"] = data.n_out
            params["metric"] = "auc" if data.metric.name == "auc" else ("binary_logloss" if binary else "multi_logloss")
        else:
            params["objective"] = params.get("objective", "regression")
        return params

    def fit(self, data: TrainingSet, rows: list[torch.Tensor], *, valid_rows=None, seeds: int = 1, seed: int = 0,
            progress: Progress = Progress(), budget: float | None = None) -> "LightGBMFitted":
        import lightgbm

        if data.features.native is None:
            raise DataError("the features predate native columns; run `pipeline preprocess` again")
        log_target = data.metric.task == "regression" and data.learns_in_log(self.log_target)
        started = time.perf_counter()
        X, y = data.features.native.numpy(), data.features.y.numpy()
        target = data.fit_target(y, log_target) if data.metric.task == "regression" else y
        categorical = data.features.native_categorical
        generator = np.random.default_rng(seed)
        groups, chosen = [], []
        step = progress.step(self.label, len(rows) * seeds, "fit")
        for group in rows:
            group = group.cpu().numpy()
            boosters = []
            for s in range(seeds):
                params = self._params(data, seed + s)
                if budget is None:
                    order = generator.permutation(group)
                    cut = max(1, round(self.inner_valid * len(order)))
                    held, kept = order[:cut], order[cut:]
                    train = lightgbm.Dataset(X[kept], target[kept], categorical_feature=categorical)
                    check = lightgbm.Dataset(X[held], target[held], reference=train, categorical_feature=categorical)
                    rounds = params.pop("n_estimators")
                    booster = lightgbm.train(params, train, rounds, valid_sets=[check],
                                             callbacks=[lightgbm.early_stopping(EARLY_STOPPING, verbose=False)])
                    chosen.append(booster.best_iteration)
                else:
                    params.pop("n_estimators")
                    train = lightgbm.Dataset(X[group], target[group], categorical_feature=categorical)
                    booster = lightgbm.train(params, train, max(1, round(budget)))
                boosters.append(booster.model_to_string(num_iteration=booster.best_iteration or None))
                step.advance()
            groups.append(boosters)
        step.close()
        fitted = LightGBMFitted(groups, data.metric, data.n_out, log_target)
        fitted.seconds, fitted.budget = time.perf_counter() - started, _mean_budget(chosen)
        return fitted


class LightGBMFitted(Fitted):
    """Boosters kept as LightGBM's own text format, which a weights-only checkpoint holds as strings."""

    label = "lightgbm"

    def __init__(self, groups: list[list[str]], metric: Metric, n_out: int, log_target: bool):
        import lightgbm

        self.groups, self.metric, self.n_out, self.log_target = groups, metric, n_out, log_target
        self.boosters = [[lightgbm.Booster(model_str=text) for text in group] for group in groups]
        self.failed_epoch = np.zeros(len(groups), dtype=int)

    def _predict_one(self, boosters: list, X: np.ndarray) -> np.ndarray:
        raw = np.mean([b.predict(X) for b in boosters], axis=0)
        if self.metric.task == "classification":
            return np.stack([1 - raw, raw], 1) if self.n_out == 2 else raw
        if self.log_target:
            raw = log_space(self.metric)[1](torch.from_numpy(raw)).numpy()
        return raw[:, None]

    def predict(self, inputs: Inputs) -> torch.Tensor:
        X = inputs.native.cpu().numpy()
        values = np.stack([self._predict_one(b, X) for b in self.boosters])
        return torch.from_numpy(values).to(inputs.dense.device, torch.float32)

    def state(self) -> dict:
        return {"member": "lightgbm", "models": self.groups, "n_out": self.n_out, "log_target": self.log_target}

    @classmethod
    def from_state(cls, state: dict, metric: Metric, device: torch.device) -> "LightGBMFitted":
        return cls(state["models"], metric, state["n_out"], state["log_target"])


# ----------------------------------------------------------------------------- loading and recipes

LOADERS = {"torch": TorchFitted.from_state, "predictions": SavedPredictions.from_state,
           "lightgbm": LightGBMFitted.from_state}


def load_fitted(state: dict, metric: Metric, device: torch.device) -> Fitted:
    """A fitted member from its :meth:`Fitted.state`; an unknown or damaged state raises
    KeyError, TypeError or ValueError (the checkpoint reader turns them into one line)."""
    return LOADERS[state["member"]](state, metric, device)


def _sklearn(table: dict, base: TrainParams) -> SklearnMember:
    options = {k: v for k, v in table.items() if k not in ("model", "log_target")}
    return SklearnMember(table["model"], tuple(sorted(options.items())), table.get("log_target", True))


def _lightgbm(table: dict, base: TrainParams) -> LightGBMMember:
    options = {k: v for k, v in table.items() if k not in ("model", "log_target", "inner_valid")}
    return LightGBMMember(tuple(sorted(options.items())), table.get("log_target", True),
                          table.get("inner_valid", LightGBMMember.inner_valid))


def _torch(table: dict, base: TrainParams) -> TorchMember:
    return TorchMember(TrainParams.from_dict({**base.to_dict(), **table}))


# an ensemble table's "model" -> how to make its member
FAMILIES: dict[str, Callable[[dict, TrainParams], object]] = {
    **{name: _sklearn for name in SKLEARN_MODELS}, "lightgbm": _lightgbm, "linear": _torch, "mlp": _torch,
}


def recipe_members(base: TrainParams, ensemble: list[dict]) -> list:
    """The members of a recipe: ``base`` alone, or one per ``ensemble`` table: a torch model's
    overrides of ``base`` (``{model = "mlp", dropout = 0.2}``), or a scikit-learn or LightGBM
    model and its options (``{model = "lasso", alpha = 5e-4}``)."""
    if not ensemble:
        return [TorchMember(base)]
    members = []
    for table in ensemble:
        if not isinstance(table, dict) or table.get("model", base.model) not in FAMILIES:
            raise ParamError("ensemble", table, f"each member is a table with a model, one of {', '.join(FAMILIES)}")
        members.append(FAMILIES[table.get("model", base.model)](table, base))
    return members
