"""LightGBM's gradient-boosted trees as a recipe member, on the native columns: categories
split natively, NaN routed by the trees. Each row set holds out ``inner_valid`` of its rows to
stop boosting at the best round; regressors learn in log space with ``log_target``. A fitted
member is its boosters in LightGBM's own text format, which a weights-only checkpoint holds."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from pipeline.errors import UsageError
from pipeline.metrics import Metric
from pipeline.progress import Progress
from pipeline.tabular.members.base import FitReport, Fitted, Inputs, Member, TrainingSet, check, mean_budget, \
    predicted_rows, scatter
from pipeline.tabular.budget import OutOfTime, part
from pipeline.tabular.target_transform import TargetTransform

EARLY_STOPPING = 200  # boosting rounds without improvement on the inner split


@dataclass(frozen=True)
class LightGBMParams:
    """LightGBM's params as this member sets them (its own defaults where not listed here)."""

    learning_rate: float = 0.05
    num_leaves: int = 31
    max_depth: int = -1
    min_child_samples: int = 20
    subsample: float = 0.8
    subsample_freq: int = 1
    colsample_bytree: float = 0.8
    reg_alpha: float = 0.0
    reg_lambda: float = 1.0
    n_estimators: int = 5000  # at most; early stopping on the inner split picks the round
    log_target: bool | str = True
    inner_valid: float = 0.15

    def __post_init__(self):
        check(self, [
            ("learning_rate", self.learning_rate > 0, "must be positive"),
            ("num_leaves", self.num_leaves >= 2, "must be at least 2"),
            ("min_child_samples", self.min_child_samples >= 1, "must be at least 1"),
            ("subsample", 0 < self.subsample <= 1, "must be in (0, 1]"),
            ("colsample_bytree", 0 < self.colsample_bytree <= 1, "must be in (0, 1]"),
            ("reg_alpha", self.reg_alpha >= 0, "must be at least 0"),
            ("reg_lambda", self.reg_lambda >= 0, "must be at least 0"),
            ("n_estimators", self.n_estimators >= 1, "must be at least 1"),
            ("log_target", self.log_target in (True, False, "auto"), "not one of true, false, auto"),
            ("inner_valid", 0 < self.inner_valid < 1, "must be in (0, 1)"),
        ])

    def booster_params(self, data: TrainingSet, seed: int) -> dict:
        params = {k: v for k, v in asdict(self).items() if k not in ("log_target", "inner_valid", "n_estimators")}
        return {**params, **data.task.boosting_objective(data.n_out), "random_state": seed, "verbose": -1,
                **({"metric": data.metric.boosting_metric} if data.metric.boosting_metric else {})}


@dataclass(frozen=True)
class LightGBMMember(Member):
    config: LightGBMParams = LightGBMParams()
    family = "lightgbm"

    @classmethod
    def declared(cls, family: str) -> dict:
        return asdict(LightGBMParams())

    @classmethod
    def build(cls, family: str, values: dict) -> "LightGBMMember":
        known = {f.name for f in fields(LightGBMParams)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"ensemble member lightgbm has no param {unknown[0]!r} (its params: {', '.join(sorted(known))})")
        return cls(LightGBMParams(**values))

    def params(self) -> dict:
        return asdict(self.config)

    def fit(self, data: TrainingSet, rows: list[torch.Tensor], *, valid_rows=None, seeds: int = 1, seed: int = 0,
            progress: Progress = Progress(), budget: float | None = None,
            deadline: float | None = None) -> "LightGBMFitted":
        if deadline is not None and deadline <= time.monotonic():
            raise OutOfTime("no time was left for it")
        started = time.perf_counter()
        transform = TargetTransform.choose(data.metric, self.config.log_target, data.y)
        target = transform.learned(torch.from_numpy(data.labels).double()).numpy() if transform.log else data.labels
        transform.fit(torch.from_numpy(np.asarray(target, dtype=np.float64)), [r.cpu() for r in rows])
        generator = np.random.default_rng(seed)
        groups, chosen, timed_out = [], [], 0
        step = progress.step(self.label, len(rows) * seeds, "fit")
        for g, group in enumerate(rows):
            boosters, X = [], data.train.native_of(g)
            for s in range(seeds):
                stop = part(deadline, (len(rows) - g) * seeds - s)
                booster, best = self._boost(X, target, group.cpu().numpy(), data, seed + s, generator, budget, stop)
                timed_out += stop is not None and time.monotonic() >= stop
                chosen.append(best)
                boosters.append(booster.model_to_string(num_iteration=booster.best_iteration or None))
                step.advance()
            groups.append(boosters)
        step.close()
        report = FitReport(time.perf_counter() - started, np.zeros(len(groups), dtype=int), mean_budget(chosen),
                           shortened=f"boosting stopped for time in {timed_out} of {len(rows) * seeds} fits"
                           if timed_out else "")
        return LightGBMFitted(groups, transform, data.n_out, report)

    def _boost(self, X, target, group: np.ndarray, data: TrainingSet, seed: int, generator, budget, deadline):
        """One booster on ``group``'s rows: early-stopped on its inner split, or ``budget`` rounds;
        stopped at ``deadline`` either way."""
        import lightgbm

        params, categorical = self.config.booster_params(data, seed), data.train.categorical
        callbacks = [] if deadline is None else [_until(deadline)]
        if budget is not None:
            train = lightgbm.Dataset(X[group], target[group], categorical_feature=categorical)
            return lightgbm.train(params, train, max(1, round(budget)), callbacks=callbacks), None
        order = generator.permutation(group)
        cut = max(1, round(self.config.inner_valid * len(order)))
        held, kept = order[:cut], order[cut:]
        train = lightgbm.Dataset(X[kept], target[kept], categorical_feature=categorical)
        check_rows = lightgbm.Dataset(X[held], target[held], reference=train, categorical_feature=categorical)
        booster = lightgbm.train(params, train, self.config.n_estimators, valid_sets=[check_rows],
                                 callbacks=[lightgbm.early_stopping(EARLY_STOPPING, verbose=False), *callbacks])
        return booster, booster.best_iteration


def _until(deadline: float):
    """A LightGBM callback that ends boosting at ``deadline`` (keeping the rounds so far)."""
    import lightgbm

    def callback(env) -> None:
        if time.monotonic() >= deadline:
            raise lightgbm.callback.EarlyStopException(env.iteration, env.evaluation_result_list or [])
    callback.order = 40  # after early stopping's own check
    return callback


class LightGBMFitted(Fitted):
    """Boosters kept as LightGBM's own text format, which a weights-only checkpoint holds as strings."""

    label = "lightgbm"

    def __init__(self, groups: list[list[str]], transform: TargetTransform, n_out: int, report: FitReport):
        import lightgbm

        self.groups, self.transform, self.n_out, self.report = groups, transform, n_out, report
        self.boosters = [[lightgbm.Booster(model_str=text) for text in group] for group in groups]

    def predict(self, inputs: Inputs, rows: list[torch.Tensor] | None = None) -> torch.Tensor:
        task, wanted = self.transform.metric.task, predicted_rows(len(self.boosters), len(inputs), rows)
        values = [task.boosted_predictions(np.mean([b.predict(inputs.native_of(g)[index]) for b in boosters], axis=0),
                                           self.n_out) for g, (boosters, index) in enumerate(zip(self.boosters, wanted))]
        return self.transform.inverse(scatter(values, wanted, len(inputs))).to(inputs.device, torch.float32)

    def state(self) -> dict:
        return {"member": "lightgbm", "models": self.groups, "n_out": self.n_out, "transform": self.transform.state()}

    @classmethod
    def from_state(cls, state: dict, metric: Metric, device: torch.device) -> "LightGBMFitted":
        return cls(state["models"], TargetTransform.from_state(state["transform"], metric), state["n_out"],
                   FitReport(0.0, np.zeros(len(state["models"]), dtype=int)))
