"""scikit-learn estimators as recipe members, fit per row set like the others, on the dense
features.

They add what Adam-trained torch models do not give: the exact L1 path of a Lasso, an RBF
support-vector machine, a linear model with its penalty cross-validated, and boosted trees,
which do not extrapolate past the training range. A member's params are its estimator's own
(checked by scikit-learn's parameter constraints before any fit) and ``log_target``; a fitted
member is its estimators, saved with skops (see :func:`pipeline.checkpoints.pack`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.svm import SVR

from pipeline import checkpoints
from pipeline.errors import UsageError
from pipeline.metrics import Metric
from pipeline.progress import Progress, Step
from pipeline.tabular.members.base import FitReport, Fitted, Inputs, Member, TrainingSet, predicted_rows, scatter
from pipeline.tabular.budget import OutOfTime
from pipeline.tabular.target_transform import TargetTransform


SEARCH_ROWS = 20_000  # rows a cross-validated penalty is chosen on, at most


def _settable(estimator):
    """The estimator whose params a member's options set (a search's, when it is wrapped)."""
    return getattr(estimator, "search", estimator)


def _ridge_cv(**options):
    """Ridge with its penalty chosen by efficient leave-one-out CV over a wide grid."""
    return RidgeCV(**{"alphas": np.logspace(-3, 4, 15), **options})


def _logistic_cv(**options):
    """Logistic regression with its penalty chosen by a 3-fold CV of the log-loss (inside the
    rows it is given). On benefits with 32 quantile splines per column it scored AUC 0.6775 in
    1.7 s, where LogisticRegression's default C = 1 scored 0.659; C above 10 took 40 s to converge
    and was never chosen."""
    defaults = dict(Cs=np.logspace(-3, 1, 9), cv=3, tol=1e-3, scoring="neg_log_loss", max_iter=2000,
                    l1_ratios=(0.0,), use_legacy_attributes=False)
    return SearchedOnSample(LogisticRegressionCV(**{**defaults, **options}))


class SearchedOnSample(ClassifierMixin, BaseEstimator):
    """A LogisticRegressionCV whose penalty is chosen on at most ``rows`` of the rows, then one
    LogisticRegression with it fit on all: the search's 27 fits (9 values of C, 3 folds) cost
    69 s of a 200,000-row CV; a penalty chosen on 20,000 rows is about as good there."""

    def __init__(self, search, rows: int = SEARCH_ROWS):
        self.search, self.rows = search, rows

    def fit(self, X, y):
        if len(X) <= self.rows:
            self.estimator_ = clone(self.search).fit(X, y)
        else:
            sample = np.random.default_rng(0).choice(len(X), self.rows, replace=False)
            searched = clone(self.search).fit(X[sample], y[sample])
            kept = {k: v for k, v in self.search.get_params().items() if k in LogisticRegression().get_params()}
            self.estimator_ = LogisticRegression(**{**kept, "C": float(np.ravel(searched.C_)[0])}).fit(X, y)
        self.classes_ = self.estimator_.classes_
        return self

    def predict_proba(self, X):
        return self.estimator_.predict_proba(X)

    def predict(self, X):
        return self.estimator_.predict(X)


# model -> task -> estimator; "glm" is the linear model of each task
ESTIMATORS = {
    "lasso": {"regression": Lasso},
    "ridge": {"regression": Ridge},
    "svr": {"regression": SVR},
    "gbm": {"regression": HistGradientBoostingRegressor, "classification": HistGradientBoostingClassifier},
    "glm": {"regression": _ridge_cv, "classification": _logistic_cv},
    "logistic": {"classification": LogisticRegression},
}


@dataclass(frozen=True)
class SklearnMember(Member):
    """``options`` go to the estimator as keyword arguments; a regressor learns in log space
    when ``log_target``."""

    model: str
    options: tuple = ()
    log_target: bool | str = True

    @property
    def family(self) -> str:
        return self.model

    @classmethod
    def declared(cls, family: str) -> dict:
        """The params of the family's estimators (of every task) with their defaults, and log_target."""
        params = {}
        for factory in ESTIMATORS[family].values():
            params.update(_settable(factory()).get_params(deep=False))
        return {**params, "log_target": True}

    @classmethod
    def build(cls, family: str, values: dict) -> "SklearnMember":
        options = {k: v for k, v in values.items() if k != "log_target"}
        return cls(family, tuple(sorted(options.items())), values.get("log_target", True))

    def params(self) -> dict:
        """The options set (the estimator's defaults stand for the rest) and log_target."""
        return {**dict(self.options), "log_target": self.log_target}

    def estimator(self, task, **options):
        """An unfitted estimator for ``task``, its params checked by scikit-learn's constraints."""
        factory = ESTIMATORS[self.model].get(task.name)
        if factory is None:
            raise UsageError(f"ensemble member {self.model} is for {' and '.join(ESTIMATORS[self.model])} "
                             f"targets, not {task.name}")
        known = _settable(factory()).get_params(deep=False)
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UsageError(f"ensemble member {self.model} has no param {unknown[0]!r} for {task.name} "
                             f"(its params: {', '.join(sorted(known))})")
        estimator = factory(**options)
        try:
            _settable(estimator)._validate_params()
        except ValueError as exc:  # scikit-learn's InvalidParameterError
            raise UsageError(f"ensemble member {self.model}: {exc}") from None
        return estimator

    def runs(self, seeds: int) -> list[dict]:
        """The estimators' options: a member with a ``random_state`` option (boosted trees with
        feature subsampling) is fit ``seeds`` times from random_state, random_state + 1, …; others once."""
        options = dict(self.options)
        first = options.get("random_state")
        return [options] if first is None else [{**options, "random_state": first + i} for i in range(seeds)]

    def estimators(self, X: np.ndarray, y: np.ndarray, task, seeds: int = 1, step: Step = Step()) -> list:
        """Fit on (X, y), once per run."""
        fitted = []
        for options in self.runs(seeds):
            estimator = self.estimator(task, **options)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                fitted.append(estimator.fit(X, y))
            step.advance()
        return fitted

    def fit(self, data: TrainingSet, rows: list[torch.Tensor], *, valid_rows=None, seeds: int = 1, seed: int = 0,
            progress: Progress = Progress(), budget=None, deadline: float | None = None) -> "SklearnFitted":
        for options in self.runs(seeds):  # a bad param is refused before any fit
            self.estimator(data.task, **options)
        started = time.perf_counter()
        transform = TargetTransform.choose(data.metric, self.log_target, data.y)
        target = transform.learned(torch.from_numpy(data.labels).double()).numpy() if transform.log else data.labels
        transform.fit(torch.from_numpy(np.asarray(target, dtype=np.float64)), [r.cpu() for r in rows], clip=True)
        step = progress.step(self.label, len(rows) * len(self.runs(seeds)), "fit")
        groups, share = [], None if deadline is None else deadline - time.monotonic()
        for g, r in enumerate(rows):
            fold_started = time.monotonic()
            groups.append(self.estimators(data.train.dense_of(g)[r.cpu()], target[r.cpu()], data.task, seeds, step))
            fold = time.monotonic() - fold_started
            if deadline is not None and time.monotonic() + fold * (len(rows) - g - 1) > deadline:
                step.close()  # its solvers cannot stop early: the rest of its fits would end too late
                raise OutOfTime(f"its {len(rows)} fits would take about {fold * len(rows):.0f} s; "
                                f"its share was {share:.0f} s")
        step.close()
        report = FitReport(time.perf_counter() - started, np.zeros(len(groups), dtype=int))
        return SklearnFitted(self.label, groups, transform, data.n_out, report)


class SklearnFitted(Fitted):
    """Each row set's estimators (its seeds), averaged in the learned space."""

    def __init__(self, label: str, groups: list[list], transform: TargetTransform, n_out: int, report: FitReport):
        self.label, self.groups, self.transform, self.n_out, self.report = label, groups, transform, n_out, report

    def predict(self, inputs: Inputs, rows: list[torch.Tensor] | None = None) -> torch.Tensor:
        task, wanted = self.transform.metric.task, predicted_rows(len(self.groups), len(inputs), rows)
        values = [np.mean([task.estimator_predictions(e, inputs.dense_of(g)[index], self.n_out) for e in estimators],
                          axis=0) for g, (estimators, index) in enumerate(zip(self.groups, wanted))]
        out = self.transform.inverse(scatter(values, wanted, len(inputs)))  # the seeds' mean, back from the learned space
        return out.to(inputs.device, torch.float32)

    def state(self) -> dict:
        return {"member": "sklearn", "label": self.label, "estimators": checkpoints.pack(self.groups),
                "transform": self.transform.state(), "n_out": self.n_out}

    @classmethod
    def from_state(cls, state: dict, metric: Metric, device: torch.device) -> "SklearnFitted":
        groups = checkpoints.unpack(state["estimators"])
        return cls(state["label"], groups, TargetTransform.from_state(state["transform"], metric), state["n_out"],
                   FitReport(0.0, np.zeros(len(groups), dtype=int)))
