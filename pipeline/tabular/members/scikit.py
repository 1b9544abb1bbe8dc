"""scikit-learn estimators as recipe members, fit per row set like the others, on the dense
features.

They add what Adam-trained torch models do not give: the exact L1 path of a Lasso, an RBF
support-vector machine, a linear model with its penalty cross-validated, and boosted trees,
which do not extrapolate past the training range. A member's params are its estimator's own
(the common ones checked by :data:`RULES` when a recipe is read) and ``log_target``; a fitted
member is its estimators, saved with skops (see :func:`pipeline.checkpoints.pack`).
"""

from __future__ import annotations

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
from pipeline.constraints import LOG_TARGET, Interval, Satisfies, at_least, check, positive
from pipeline.errors import UsageError
from pipeline.tabular.members.base import register
from pipeline.tabular.members.library import LibraryMember, OneFit, estimator_outputs


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


# What the estimators' common params take, checked when a recipe is read; scikit-learn checks the
# rest when it fits (its own checker is private API).
RULES = {"alpha": at_least(0, float), "C": positive(), "epsilon": at_least(0, float), "gamma": Satisfies(
    lambda v: v in ("scale", "auto") or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0),
    "must be scale, auto or a positive number"), "learning_rate": positive(), "max_iter": at_least(1),
    "min_samples_leaf": at_least(1), "l2_regularization": at_least(0, float),
    "max_features": Interval(float, 0, 1, open="low"), "random_state": at_least(0), "log_target": LOG_TARGET}


@dataclass(frozen=True)
class SklearnMember(LibraryMember):
    """``options`` go to the estimator as keyword arguments; a regressor learns in log space
    when ``log_target``."""

    model: str
    options: tuple = ()
    log_target: bool | str = True
    clips = True  # an RBF SVR or a Lasso extrapolates: kept inside the labels' range

    def __post_init__(self):
        check(self.params(), RULES)

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
        known = cls.declared(family)
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UsageError(f"ensemble member {family} has no param {unknown[0]!r} (its params: {', '.join(sorted(known))})")
        options = {k: v for k, v in values.items() if k != "log_target"}
        return cls(family, tuple(sorted(options.items())), values.get("log_target", True))

    def params(self) -> dict:
        """The options set (the estimator's defaults stand for the rest) and log_target."""
        return {**dict(self.options), "log_target": self.log_target}

    def supports(self, task) -> bool:
        return task.name in ESTIMATORS[self.model]

    def estimator(self, task, **options):
        """An unfitted estimator for ``task``; an unknown param is a one-line error."""
        if not self.supports(task):
            raise UsageError(f"ensemble member {self.model} is for {' and '.join(ESTIMATORS[self.model])} "
                             f"targets, not {task.name}")
        factory = ESTIMATORS[self.model][task.name]
        known = _settable(factory()).get_params(deep=False)
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UsageError(f"ensemble member {self.model} has no param {unknown[0]!r} for {task.name} "
                             f"(its params: {', '.join(sorted(known))})")
        return factory(**options)

    def check(self, task) -> None:
        self.estimator(task, **dict(self.options))

    def seeds_of(self, seeds: int, seed: int) -> list:
        """A member with a ``random_state`` option (boosted trees with feature subsampling) is fit
        ``seeds`` times from random_state, random_state + 1, …; others once."""
        first = dict(self.options).get("random_state")
        return [None] if first is None else [first + i for i in range(seeds)]

    def _fit_one(self, X, target, rows, one: OneFit):
        options = dict(self.options, **({} if one.seed is None else {"random_state": one.seed}))
        estimator = self.estimator(one.data.task, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                return estimator.fit(X[rows], target[rows]), None
            except ValueError as exc:  # scikit-learn's InvalidParameterError, by name: its module is private
                if type(exc).__name__ != "InvalidParameterError":
                    raise
                raise UsageError(f"ensemble member {self.model}: {exc}") from None

    def _predict_one(self, estimator, X, task, outputs: int) -> np.ndarray:
        return estimator_outputs(estimator, X, task, outputs)

    def _dump(self, models: list[list]) -> torch.Tensor:
        return checkpoints.pack(models)

    def _load(self, dumped: torch.Tensor) -> list[list]:
        return checkpoints.unpack(dumped)


register(SklearnMember, *ESTIMATORS)
