"""LightGBM's gradient-boosted trees as a recipe member, on the native columns: categories
split natively, NaN routed by the trees. Each row set holds out ``inner_valid`` of its rows to
stop boosting at the best round; regressors learn in log space with ``log_target``. A fitted
member is its boosters in LightGBM's own text format, which a weights-only checkpoint holds."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.constraints import LOG_TARGET, Interval, at_least, param, positive, validate
from pipeline.tabular.members.base import TrainingSet, register
from pipeline.tabular.members.library import ConfiguredMember, OneFit

EARLY_STOPPING = 200  # boosting rounds without improvement on the inner split
# LightGBM's objective for each problem a task poses (see Task.problem)
OBJECTIVES = {"regression": lambda outputs: {"objective": "regression"},
              "binary": lambda outputs: {"objective": "binary"},
              "multiclass": lambda outputs: {"objective": "multiclass", "num_class": outputs}}
SHARE = Interval(float, 0, 1, open="low")


@dataclass(frozen=True)
class LightGBMParams:
    """LightGBM's params as this member sets them (its own defaults where not listed here)."""

    learning_rate: float = param(0.05, positive())
    num_leaves: int = param(31, at_least(2))
    max_depth: int = param(-1, Interval(int))
    min_child_samples: int = param(20, at_least(1))
    subsample: float = param(0.8, SHARE)
    subsample_freq: int = param(1, at_least(0))
    colsample_bytree: float = param(0.8, SHARE)
    reg_alpha: float = param(0.0, at_least(0, float))
    reg_lambda: float = param(1.0, at_least(0, float))
    n_estimators: int = param(5000, at_least(1))  # at most; early stopping on the inner split picks the round
    log_target: bool | str = param(True, LOG_TARGET)
    inner_valid: float = param(0.15, Interval(float, 0, 1, open="both"))

    def __post_init__(self):
        validate(self)

    def booster_params(self, data: TrainingSet, seed: int) -> dict:
        params = {k: v for k, v in asdict(self).items() if k not in ("log_target", "inner_valid", "n_estimators")}
        problem = data.task.problem(data.n_out)
        ranked = data.metric.ranks and problem == "binary"  # early stopping on LightGBM's AUC, not its loss
        return {**params, **OBJECTIVES[problem](data.n_out), "random_state": seed, "verbose": -1,
                **({"metric": "auc"} if ranked else {})}


@dataclass(frozen=True)
class LightGBMMember(ConfiguredMember):
    config: LightGBMParams = LightGBMParams()
    Params = LightGBMParams
    family = "lightgbm"
    native = True
    stops_at_deadline = True
    stopped = "boosting stopped"

    def _fit_one(self, X, target, rows, one: OneFit):
        """One booster on ``rows``: early-stopped on its inner split, or ``budget`` rounds;
        stopped at ``one.stop`` either way."""
        import lightgbm

        params, categorical = self.config.booster_params(one.data, one.seed), one.data.train.categorical
        callbacks = [] if one.stop is None else [_until(one.stop)]
        if one.budget is not None:
            train = lightgbm.Dataset(X[rows], target[rows], categorical_feature=categorical)
            return lightgbm.train(params, train, max(1, round(one.budget)), callbacks=callbacks), None
        kept, held = one.inner_split(rows, self.config.inner_valid)
        train = lightgbm.Dataset(X[kept], target[kept], categorical_feature=categorical)
        check_rows = lightgbm.Dataset(X[held], target[held], reference=train, categorical_feature=categorical)
        booster = lightgbm.train(params, train, self.config.n_estimators, valid_sets=[check_rows],
                                 callbacks=[lightgbm.early_stopping(EARLY_STOPPING, verbose=False), *callbacks])
        kept = booster.model_to_string(num_iteration=booster.best_iteration or None)  # the rounds past the best dropped
        return lightgbm.Booster(model_str=kept), booster.best_iteration

    def _predict_one(self, booster, X, task, outputs: int) -> np.ndarray:
        return task.as_outputs(booster.predict(X), outputs)

    def _dump(self, models: list[list]) -> list[list[str]]:
        """LightGBM's own text format."""
        return [[booster.model_to_string() for booster in boosters] for boosters in models]

    def _load(self, dumped: list[list[str]]) -> list[list]:
        import lightgbm

        return [[lightgbm.Booster(model_str=text) for text in texts] for texts in dumped]


def _until(deadline: float):
    """A LightGBM callback that ends boosting at ``deadline`` (keeping the rounds so far)."""
    import lightgbm

    def callback(env) -> None:
        if time.monotonic() >= deadline:
            raise lightgbm.callback.EarlyStopException(env.iteration, env.evaluation_result_list or [])
    callback.order = 40  # after early stopping's own check
    return callback


register(LightGBMMember, "lightgbm")
