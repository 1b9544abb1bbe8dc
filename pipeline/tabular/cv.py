"""K-fold cross-validation: of a grid of torch configs (a sweep), or of a recipe's members.

Configs that can share a stacked model (same :meth:`TrainParams.group_key`) train together
with all K folds as one model; a recipe's members each fit all K folds through the member
protocol.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.folds import fold_rows
from pipeline.metrics import metric_for
from pipeline.progress import Progress
from pipeline.tabular.ensemble import blend, fit_weights
from pipeline.tabular.features import Features
from pipeline.tabular.members import Fitted, Inputs, TrainingSet, score_groups
from pipeline.tabular.trainer import FitResult, TrainParams, fit

@dataclass
class FoldScores:
    """A model's (or a blend's) cross-validation: per-fold final metrics and per-epoch curves."""

    label: str
    train: list[float]
    valid: list[float]
    failed_epoch: list[int]  # per fold; 0 when the fold trained to the end
    train_curves: list[list[float]] = field(default_factory=list)  # per fold, per epoch (empty without curves)
    valid_curves: list[list[float]] = field(default_factory=list)
    params: TrainParams | None = None  # a sweep's config
    seconds: float = 0.0

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
    scores: list[FoldScores]
    metric: str
    folds: int
    split: str
    seed: int
    seconds: float
    device: str

    def ranked(self) -> list[FoldScores]:
        """Best first by the metric's direction; failed configs last."""
        key = metric_for(self.metric).sort_key
        return sorted(self.scores, key=lambda s: (s.failed, key(s.mean_valid) if not s.failed else 0))


def _splits(data: TrainingSet, folds: int, split: str, seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each fold's training and validation rows, on the training device."""
    splits = fold_rows(data.features.y, folds, split, seed, stratify=data.metric.task == "classification")
    return [tr.to(data.device) for tr, _ in splits], [va.to(data.device) for _, va in splits]


def cross_validate(features: Features, configs: list[TrainParams], *, folds: int = 5,
                   split: str = "contiguous", seed: int = 0, device: torch.device = torch.device("cpu"),
                   curves: bool = True, progress: Progress = Progress()) -> CVResult:
    """K-fold CV of every config of a grid; configs sharing a group key train as one stacked model."""
    started = time.perf_counter()
    data = TrainingSet(features, device)
    configs = [c.with_(log_target=data.learns_in_log(c.log_target)) for c in configs]
    train_rows, valid_rows = _splits(data, folds, split, seed)
    by_key: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        by_key.setdefault(config.group_key(), []).append(i)
    scores: list[FoldScores | None] = [None] * len(configs)
    for number, indices in enumerate(by_key.values(), 1):
        group = [configs[i] for i in indices]
        step = progress.step(f"{len(group)} {group[0].model} configs" + (f" (group {number}/{len(by_key)})"
                             if len(by_key) > 1 else ""), group[0].epochs, "epoch", data.metric.higher_is_better)
        result = fit(data.X, data.y, train_rows, group, metric=data.metric.name, valid_rows=valid_rows,
                     n_out=data.n_out, seed=seed, curves=curves,
                     on_epoch=lambda epoch, epochs, curves: step.advance(1, curves))
        step.close()
        for column, i in enumerate(indices):
            scores[i] = _config_scores(result, column)
    return CVResult(scores, data.metric.name, folds, split, seed, time.perf_counter() - started, str(device))


def _config_scores(result: FitResult, column: int) -> FoldScores:
    curves = result.valid_curve is not None and len(result.train_curve) > 1
    config = result.configs[column]
    return FoldScores(
        label=config.model,
        train=[float(v) for v in result.final_train[:, column]],
        valid=[float(v) for v in result.final_valid[:, column]],
        failed_epoch=[int(e) for e in result.failed_epoch[:, column]],
        train_curves=result.train_curve[:, :, column].T.tolist() if curves else [],
        valid_curves=result.valid_curve[:, :, column].T.tolist() if curves else [],
        params=config, seconds=result.seconds,
    )


@dataclass
class RecipeScore:
    """A recipe's CV: the blend's per-fold metrics (each fold's blend weighed without that fold),
    each member's own, the weights fit on every out-of-fold row (the submission's), each
    member's out-of-fold predictions (M, rows, outputs) and the training lengths it chose."""

    score: FoldScores
    members: list[FoldScores]
    weights: list[float]
    fold_weights: list[list[float]]
    oof: torch.Tensor
    budgets: list[float | None]
    blend_oof: torch.Tensor  # (rows, outputs): each row's blend by the fold that did not train on it


def _member_scores(fitted: Fitted, predictions: torch.Tensor, data: TrainingSet,
                   train_rows: list[torch.Tensor], valid_rows: list[torch.Tensor]) -> FoldScores:
    failed = [int(e) for e in fitted.failed_epoch]
    train, valid = (fitted.score(predictions, data.y, rows) for rows in (train_rows, valid_rows))
    curves = fitted.curves
    train_curves, valid_curves = ([], []) if curves is None or len(curves[0]) < 2 else \
        (curves[0].T.tolist(), curves[1].T.tolist())
    return FoldScores(fitted.label, train, valid, failed, train_curves, valid_curves, seconds=fitted.seconds)


def out_of_fold(predictions: torch.Tensor, valid_rows: list[torch.Tensor]) -> torch.Tensor:
    """(rows, outputs): each row's prediction by the fold that did not train on it."""
    oof = torch.empty_like(predictions[0])
    for group, rows in zip(predictions, valid_rows):
        oof[rows] = group[rows]
    return oof


def cross_validate_recipe(features: Features, members: list, *, seeds: int = 1, folds: int = 5,
                          split: str = "contiguous", seed: int = 0, device: torch.device = torch.device("cpu"),
                          blend_with: str = "mean",
                          progress: Progress = Progress()) -> tuple[RecipeScore, float]:
    """K-fold CV of the blend of ``members`` (each trained ``seeds`` times, all folds at once).

    Every member is fit inside the folds, and the weights that blend fold k's predictions are
    fit on the other folds' out-of-fold predictions only, so the blend's fold scores are honest.
    """
    started = time.perf_counter()
    data = TrainingSet(features, device)
    train_rows, valid_rows = _splits(data, folds, split, seed)
    fitted = [m.fit(data, train_rows, valid_rows=valid_rows, seeds=seeds, seed=seed, progress=progress)
              for m in members]
    predictions = [f.predict(data.train) for f in fitted]
    member_scores = [_member_scores(f, p, data, train_rows, valid_rows) for f, p in zip(fitted, predictions)]
    oof = torch.stack([out_of_fold(p, valid_rows) for p in predictions])
    fold_weights = []
    for rows in valid_rows:
        others = torch.ones(len(data.y), dtype=torch.bool, device=device)
        others[rows] = False
        fold_weights.append(fit_weights(blend_with, oof[:, others], data.y[others], data.metric))
    blended = torch.stack([blend([p[g] for p in predictions], data.metric, w) for g, w in enumerate(fold_weights)])
    failed = [max(m.failed_epoch[g] for m in member_scores) for g in range(folds)]
    if len(members) == 1:
        curves = member_scores[0].train_curves, member_scores[0].valid_curves
    else:  # each member's fold-mean curves: one line per member in the plot
        curved = [m for m in member_scores if m.train_curves]
        curves = ([np.mean(m.train_curves, axis=0).tolist() for m in curved],
                  [np.mean(m.valid_curves, axis=0).tolist() for m in curved])
    score = FoldScores("blend", score_groups(blended, data.y, train_rows, data.metric),
                       score_groups(blended, data.y, valid_rows, data.metric), failed, *curves)
    weights = fit_weights(blend_with, oof, data.y, data.metric)
    return RecipeScore(score, member_scores, weights, fold_weights, oof.cpu(), [f.budget for f in fitted],
                       out_of_fold(blended, valid_rows).cpu()), time.perf_counter() - started


def fit_final(features: Features, members: list, *, seeds: int = 1, seed: int = 0,
              device: torch.device = torch.device("cpu"), budgets: list[float | None] | None = None,
              progress: Progress = Progress()) -> tuple[list[Fitted], TrainingSet]:
    """Train every member (``seeds`` copies each) on every training row, for the submission;
    a member given a budget (from its CV) trains that long."""
    data = TrainingSet(features, device)
    rows = [torch.arange(len(data.X), device=device)]
    budgets = budgets or [None] * len(members)
    return [m.fit(data, rows, seeds=seeds, seed=seed, progress=progress, budget=b)
            for m, b in zip(members, budgets)], data


def predict_blend(fitted: list[Fitted], inputs: Inputs, metric, weights: list[float] | None = None) -> np.ndarray:
    """The recipe's predictions for ``inputs``: values (N,) or class probabilities (N, classes)."""
    out = blend([f.predict(inputs) for f in fitted], metric, weights)[0]
    return (out if metric.task == "classification" else out[:, 0]).cpu().numpy()
