"""CatBoost's gradient-boosted oblivious trees as a recipe member (``{model = "catboost"}``), on
the native columns: categories by its ordered target statistics (codes, a missing one its own
level), numbers with NaN as they are. Each row set holds out ``inner_valid`` of its rows to stop
boosting at the best round, as LightGBM does. CatBoost is an optional dependency (``pip install
"foldstack[best]"``); a fitted member is its models in CatBoost's own binary format.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.constraints import LOG_TARGET, Interval, at_least, param, positive, validate
from pipeline.errors import UsageError
from pipeline.tabular.members.base import register
from pipeline.tabular.members.library import ConfiguredMember, OneFit

EARLY_STOPPING = 200  # rounds without improvement on the inner split
# Plain boosting and no combinations of categories: on hotel (10,800 rows, three categories of
# 98-167 levels) its 5-fold CV took 448 s with CatBoost's defaults (ordered boosting, ctr
# combinations up to 4) and 138 s so, RMSLE 0.1383 and 0.1393 (LightGBM 0.1401 in 15 s).
SPEED = {"boosting_type": "Plain", "max_ctr_complexity": 1}
INSTALL = 'pip install "foldstack[best]"'
LOSSES = {"regression": "RMSE", "binary": "Logloss", "multiclass": "MultiClass"}  # for each Task.problem


@dataclass(frozen=True)
class CatBoostParams:
    learning_rate: float = param(0.05, positive())
    depth: int = param(6, Interval(int, 1, 16))
    l2_leaf_reg: float = param(3.0, at_least(0, float))
    iterations: int = param(5000, at_least(1))  # at most; early stopping on the inner split picks the round
    log_target: bool | str = param("auto", LOG_TARGET)
    inner_valid: float = param(0.15, Interval(float, 0, 1, open="both"))

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class CatBoostMember(ConfiguredMember):
    config: CatBoostParams = CatBoostParams()
    Params = CatBoostParams
    family = "catboost"
    native = True
    stops_at_deadline = True
    stopped = "boosting stopped"

    def missing(self) -> str | None:
        try:
            import catboost  # noqa: F401
        except ImportError:
            return INSTALL
        return None

    def check(self, task) -> None:
        _library()

    def _fit_one(self, X: np.ndarray, target, rows, one: OneFit):
        catboost = _library()
        problem = one.data.task.problem(one.data.n_out)
        ranked = one.data.metric.ranks and problem == "binary"
        model = catboost.CatBoost({
            "loss_function": LOSSES[problem], "learning_rate": self.config.learning_rate, "depth": self.config.depth,
            "l2_leaf_reg": self.config.l2_leaf_reg, "random_seed": one.seed, "verbose": False,
            "allow_writing_files": False, "thread_count": os.cpu_count() or 1,
            **SPEED,
            "iterations": max(1, round(one.budget)) if one.budget is not None else self.config.iterations,
            **({"eval_metric": "AUC"} if ranked else {})})
        categorical = one.data.train.categorical

        def pool(rows):
            return catboost.Pool(_frame(X[rows], categorical), target[rows], cat_features=categorical)

        callbacks = [] if one.stop is None else [_Until(one.stop)]
        if one.budget is not None:
            model.fit(pool(rows), callbacks=callbacks)
            return model, None
        kept, held = one.inner_split(rows, self.config.inner_valid)
        model.fit(pool(kept), eval_set=pool(held),
                  early_stopping_rounds=EARLY_STOPPING, use_best_model=True, callbacks=callbacks)
        return model, model.get_best_iteration() + 1

    def _predict_one(self, model, X: np.ndarray, task, outputs: int) -> np.ndarray:
        X = _frame(X, model.get_cat_feature_indices())
        if task.continuous:
            return task.as_outputs(model.predict(X), outputs)
        probabilities = model.predict(X, prediction_type="Probability")
        classes = [int(c) for c in model.classes_] if outputs > 2 else None  # labels are class indices
        return task.as_outputs(probabilities, outputs, classes)

    def _dump(self, models: list[list]) -> list[list[torch.Tensor]]:
        """CatBoost's own binary format, as uint8 tensors (a weights-only checkpoint holds them)."""
        dumped = []
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.cbm")
            for boosters in models:
                dumped.append([])
                for model in boosters:
                    model.save_model(path)
                    with open(path, "rb") as file:
                        dumped[-1].append(torch.frombuffer(bytearray(file.read()), dtype=torch.uint8))
        return dumped

    def _load(self, dumped) -> list[list]:
        catboost = _library()
        return [[catboost.CatBoost().load_model(blob=bytes(t.numpy().tobytes())) for t in group] for group in dumped]


def _frame(X: np.ndarray, categorical: list[int]) -> pd.DataFrame:
    """Native columns as CatBoost takes them: categories as integer codes (it refuses float
    ones), -1 for a missing one."""
    frame = pd.DataFrame(X)
    for column in categorical:
        frame[column] = frame[column].fillna(-1).astype(np.int64)
    return frame


class _Until:
    """A CatBoost callback that ends boosting at ``deadline`` (keeping the rounds so far)."""

    def __init__(self, deadline: float):
        self.deadline = deadline

    def after_iteration(self, info) -> bool:
        return time.monotonic() < self.deadline


def _library():
    try:
        import catboost
    except ImportError:
        raise UsageError(f"model catboost needs CatBoost: {INSTALL}") from None
    return catboost


register(CatBoostMember, "catboost")
