"""Folds and sweeps: K-fold cross-validation of one config or a grid, each group trained at once.

The splitters are scikit-learn's (KFold, StratifiedKFold). Configs that can share a stacked
model (same :meth:`TrainParams.group_key`) train together with all K folds as one model.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Lasso, Ridge
from sklearn.svm import SVR
from sklearn.model_selection import KFold, StratifiedKFold

from pipeline.errors import UsageError
from pipeline.tabular import Features
from pipeline.trainer import FitResult, TrainParams, fit, predict_raw, to_predictions

SPLITS = ("contiguous", "shuffled")


def fold_rows(labels: torch.Tensor, folds: int, split: str, seed: int,
              stratify: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(train rows, valid rows) per fold. ``contiguous`` is d2l's split: fold i is the i-th block."""
    if split not in SPLITS:
        raise UsageError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    n = len(labels)
    if not 2 <= folds <= n:
        raise UsageError(f"--folds {folds}: need between 2 and {n} (the number of training rows)")
    shuffle = split == "shuffled"
    splitter_cls = StratifiedKFold if stratify else KFold
    splitter = splitter_cls(n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None)
    y = labels.cpu().numpy() if stratify else np.zeros(n)
    return [(torch.from_numpy(tr), torch.from_numpy(va)) for tr, va in splitter.split(np.zeros(n), y)]


@dataclass
class ConfigScore:
    """One config's cross-validation: per-fold final metrics and per-epoch curves."""

    params: TrainParams
    train: list[float]
    valid: list[float]
    failed_epoch: list[int]  # per fold; 0 when the fold trained to the end
    train_curves: list[list[float]]  # per fold, per epoch (empty without curves)
    valid_curves: list[list[float]]

    @property
    def failed(self) -> bool:
        return any(self.failed_epoch)

    @property
    def mean_valid(self) -> float:
        return float(np.mean(self.valid)) if not self.failed else float("nan")

    @property
    def std_valid(self) -> float:
        return float(np.std(self.valid)) if not self.failed else float("nan")


@dataclass
class CVResult:
    scores: list[ConfigScore]
    metric: str
    folds: int
    split: str
    seed: int
    seconds: float
    device: str

    def ranked(self) -> list[ConfigScore]:
        """Best first; failed configs last. Accuracy is maximised, errors minimised."""
        sign = -1 if self.metric == "accuracy" else 1
        return sorted(self.scores, key=lambda s: (s.failed, sign * s.mean_valid if not s.failed else 0))


def cross_validate(features: Features, configs: list[TrainParams], *, folds: int = 5,
                   split: str = "contiguous", seed: int = 0, device: torch.device = torch.device("cpu"),
                   curves: bool = True, on_epoch: Callable[[int, int], None] | None = None) -> CVResult:
    """K-fold CV of every config; configs sharing a group key train as one stacked model."""
    started = time.perf_counter()
    spec = features.spec
    X, y, train_rows, valid_rows = _on_device(features, configs, folds, split, seed, device)
    by_key: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        by_key.setdefault(config.group_key(), []).append(i)
    scores: list[ConfigScore | None] = [None] * len(configs)
    for indices in by_key.values():
        result = fit(X, y, train_rows, [configs[i] for i in indices], metric=spec.metric,
                     valid_rows=valid_rows, n_out=max(1, len(features.classes)), seed=seed,
                     curves=curves, on_epoch=on_epoch)
        for column, i in enumerate(indices):
            scores[i] = _score(result, column)
    return CVResult(scores, spec.metric, folds, split, seed, time.perf_counter() - started, str(device))


def _on_device(features: Features, configs: list, folds: int, split: str, seed: int, device: torch.device):
    """Checked configs' data and fold rows on the training device: X, y, train rows, valid rows."""
    _check_log_target(features, configs)
    splits = fold_rows(features.y, folds, split, seed, stratify=features.spec.task == "classification")
    return (features.X.to(device), features.y.to(device),
            [tr.to(device) for tr, _ in splits], [va.to(device) for _, va in splits])


def _score(result: FitResult, column: int) -> ConfigScore:
    curves = result.valid_curve is not None and len(result.train_curve) > 1
    return ConfigScore(
        params=result.configs[column],
        train=[float(v) for v in result.final_train[:, column]],
        valid=[float(v) for v in result.final_valid[:, column]],
        failed_epoch=[int(e) for e in result.failed_epoch[:, column]],
        train_curves=result.train_curve[:, :, column].T.tolist() if curves else [],
        valid_curves=result.valid_curve[:, :, column].T.tolist() if curves else [],
    )


def _check_log_target(features: Features, configs: list[TrainParams]) -> None:
    if any(c.log_target for c in configs) and (
            features.spec.task != "regression" or bool((features.y <= 0).any())):
        raise UsageError("--log-target needs a regression target with positive labels")


def parse_grid(items: list[str] | tuple[str, ...]) -> dict[str, list]:
    """``["lr=0.01,0.03", "hidden=256,128x64"]`` -> ``{"lr": [0.01, 0.03], "hidden": [(256,), (128, 64)]}``.

    Values are typed by the param's default in :class:`TrainParams`.
    """
    defaults = TrainParams()
    grid: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        key = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise UsageError(f"--grid {item!r}: write NAME=V1,V2,… (e.g. lr=0.01,0.03)")
        if not hasattr(defaults, key):
            raise UsageError(f"--grid {item!r}: unknown param {name!r} "
                             f"(sweepable: {', '.join(sorted(defaults.to_dict()))})")
        grid[key] = [_typed(key, getattr(defaults, key), v.strip(), item) for v in values.split(",")]
    return grid


def _typed(key: str, default, text: str, item: str):
    try:
        if isinstance(default, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(default, tuple):
            return tuple(int(w) for w in text.split("x"))
        return type(default)(text)
    except ValueError:
        raise UsageError(f"--grid {item!r}: {text!r} is not a valid {key}") from None


def expand_grid(base: TrainParams, grid: dict[str, list]) -> list[TrainParams]:
    """Every combination of the grid's values over ``base``, in the grid's order."""
    names = list(grid)
    return [base.with_(**dict(zip(names, values))) for values in itertools.product(*(grid[n] for n in names))]


# ----------------------------------------------------------------------------- ensembles

SKLEARN_MODELS = {"lasso": Lasso, "ridge": Ridge, "svr": SVR, "gbm": HistGradientBoostingRegressor}


@dataclass(frozen=True)
class SklearnMember:
    """A scikit-learn regressor as a recipe member, fit per fold like the others.

    They add what Adam-trained torch models do not give: the exact L1 path of a Lasso, an RBF
    support-vector machine, and boosted trees, which do not extrapolate past the training range.
    ``options`` go to the estimator as keyword arguments; training is on log(label) when
    ``log_target``.
    """

    model: str
    options: tuple = ()
    log_target: bool = True

    def fit_predict(self, X: np.ndarray, y: np.ndarray, X_eval: np.ndarray, seeds: int = 1) -> np.ndarray:
        """Fit on (X, y) and predict X_eval. A member with a ``random_state`` option (boosted trees
        with feature subsampling) is fit ``seeds`` times from random_state, random_state + 1, …,
        and its predictions averaged (in log space with ``log_target``); others are fit once."""
        options = dict(self.options)
        first = options.get("random_state")
        runs = [options] if first is None else [{**options, "random_state": first + i} for i in range(seeds)]
        target = np.log(y) if self.log_target else y
        outs = []
        for kwargs in runs:
            estimator = SKLEARN_MODELS[self.model](**kwargs)
            try:
                estimator.fit(X, target)
            except TypeError as exc:
                raise UsageError(f"ensemble member {self.model}: {exc}") from None
            outs.append(estimator.predict(X_eval))
        out = np.mean(outs, axis=0)
        return np.exp(out) if self.log_target else out


def recipe_members(base: TrainParams, ensemble: list[dict]) -> list:
    """The models of a recipe: ``base`` alone, or one per ``ensemble`` table of overrides
    (``{model = "lasso", alpha = 5e-4}`` makes a scikit-learn member)."""
    if not ensemble:
        return [base]
    members = []
    for table in ensemble:
        if not isinstance(table, dict):
            raise UsageError(f"ensemble member {table!r} must be a table of params, e.g. {{model = \"mlp\"}}")
        if table.get("model") in SKLEARN_MODELS:
            options = {k: v for k, v in table.items() if k not in ("model", "log_target")}
            members.append(SklearnMember(table["model"], tuple(sorted(options.items())),
                                         table.get("log_target", True)))
        else:
            members.append(TrainParams.from_dict({**base.to_dict(), **table}))
    return members


def blend_space(predictions: torch.Tensor, metric: str) -> torch.Tensor:
    """Where members are averaged: log prices for log-RMSE (a geometric mean), else as predicted."""
    return predictions.clamp_min(1).log() if metric == "log_rmse" else predictions


def _score_blend(blend: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, metric: str) -> float:
    if metric == "accuracy":
        return float((blend[rows].argmax(-1) == y[rows]).float().mean())
    target = y[rows].log() if metric == "log_rmse" else y[rows]
    return float((blend[rows] - target).square().mean().sqrt())


@dataclass
class RecipeScore:
    """A recipe's CV: the blend's per-fold metrics and each member's own score."""

    score: ConfigScore
    members: list[ConfigScore]


def cross_validate_recipe(features: Features, members: list, *, seeds: int = 1, folds: int = 5,
                          split: str = "contiguous", seed: int = 0, device: torch.device = torch.device("cpu"),
                          on_epoch: Callable[[int, int], None] | None = None) -> tuple[RecipeScore, float]:
    """K-fold CV of the average of ``members`` (each trained ``seeds`` times, all folds at once).

    Every member and seed is fit inside the folds, so the blend's fold scores are honest.
    A single member with one seed is plain :func:`cross_validate`.
    """
    started = time.perf_counter()
    spec = features.spec
    X, y, train_rows, valid_rows = _on_device(features, members, folds, split, seed, device)
    blend, member_scores = 0.0, []
    for member in members:
        if isinstance(member, SklearnMember):
            _check_sklearn(features)
            Xn, yn = features.X.numpy(), features.y.numpy()
            predictions = torch.stack([torch.from_numpy(member.fit_predict(Xn[tr.cpu()], yn[tr.cpu()], Xn, seeds))
                                       for tr in train_rows]).to(device, torch.float32)
            member_blend = blend_space(predictions, spec.metric)  # (folds, rows)
            member_scores.append(ConfigScore(
                member, [_score_blend(member_blend[g], y, tr, spec.metric) for g, tr in enumerate(train_rows)],
                [_score_blend(member_blend[g], y, va, spec.metric) for g, va in enumerate(valid_rows)],
                [0] * folds, [], []))
            blend = blend + member_blend / len(members)
            continue
        result = fit(X, y, train_rows, [member] * seeds, metric=spec.metric, valid_rows=valid_rows,
                     n_out=max(1, len(features.classes)), seed=seed, on_epoch=on_epoch)
        member_scores.append(_score(result, 0))
        predictions = to_predictions(predict_raw(result.model, X), result.configs, spec.task)
        blend = blend + blend_space(predictions, spec.metric).mean(2) / len(members)  # (folds, rows[, classes])
    train = [_score_blend(blend[g], y, tr, spec.metric) for g, tr in enumerate(train_rows)]
    valid = [_score_blend(blend[g], y, va, spec.metric) for g, va in enumerate(valid_rows)]
    failed = [max(int(m.failed_epoch[g]) for m in member_scores) for g in range(folds)]
    score = ConfigScore(members[0], train, valid, failed,
                        *_mean_curves(member_scores) if len(members) > 1 or seeds > 1 else
                        (member_scores[0].train_curves, member_scores[0].valid_curves))
    return RecipeScore(score, member_scores), time.perf_counter() - started


def _check_sklearn(features: Features) -> None:
    if features.spec.task != "regression":
        raise UsageError(f"scikit-learn ensemble members ({', '.join(SKLEARN_MODELS)}) are for regression targets")


def _mean_curves(scores: list[ConfigScore]) -> tuple[list, list]:
    """Each torch member's fold-mean curves (one line per member in the plot)."""
    curved = [s for s in scores if s.train_curves]
    return ([np.mean(s.train_curves, axis=0).tolist() for s in curved],
            [np.mean(s.valid_curves, axis=0).tolist() for s in curved])


def fit_final(features: Features, members: list, *, seeds: int = 1, seed: int = 0,
              device: torch.device = torch.device("cpu"),
              on_epoch: Callable[[int, int], None] | None = None) -> list:
    """Train every member (``seeds`` copies each) on every training row, for the submission.

    A torch member gives its :class:`FitResult`; a scikit-learn member gives its test-set
    predictions (trees are not tensors, and a checkpoint must load with weights_only=True).
    """
    _check_log_target(features, members)
    X, y = features.X.to(device), features.y.to(device)
    rows = torch.arange(len(X), device=device)
    out = []
    for member in members:
        if isinstance(member, SklearnMember):
            _check_sklearn(features)
            prices = member.fit_predict(features.X.numpy(), features.y.numpy(), features.X_test.numpy(), seeds)
            out.append(torch.from_numpy(prices).float())
        else:
            out.append(fit(X, y, [rows], [member] * seeds, metric=features.spec.metric,
                           n_out=max(1, len(features.classes)), seed=seed, curves=False, on_epoch=on_epoch))
    return out


def predict_blend(models: list, X_test: torch.Tensor, task: str, metric: str) -> np.ndarray:
    """The recipe's test predictions: prices, or class probabilities, averaged over members and
    seeds in :func:`blend_space`. ``models`` holds ``(StackedRegressor, configs)`` pairs and
    scikit-learn members' saved test predictions."""
    blend = 0.0
    for member in models:
        if isinstance(member, torch.Tensor):
            predictions = member.to(X_test.device).unsqueeze(1)
        else:
            model, configs = member
            predictions = to_predictions(predict_raw(model, X_test.to(model.device)), configs, task)[0]
        blend = blend + blend_space(predictions.to(X_test.device), metric).mean(1) / len(models)
    out = blend.exp() if metric == "log_rmse" else blend
    return out.cpu().numpy()
