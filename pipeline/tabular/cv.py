"""K-fold cross-validation: of a grid of torch configs (a sweep), or of a recipe's members.

Configs that can share a stacked model (same :meth:`TrainParams.group_key`) train together
with all K folds as one model; a recipe's members each fit all K folds through the member
protocol, and the blend of their out-of-fold predictions is scored honestly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from pipeline.backends import Local, Task
from pipeline.folds import fold_rows
from pipeline.metrics import Metric
from pipeline.progress import Progress
from pipeline.errors import DataError, ParamError, TrainingError
from pipeline.tabular import infold
from pipeline.tabular.budget import Budget, OutOfTime
from pipeline.tabular.ensemble import blend, fit_weights
from pipeline.tabular.features import Features
from pipeline.tabular.members import TrainingSet, score_groups
from pipeline.tabular.recipe import FoldParams, Recipe
from pipeline.tabular.stacking import StackedColumns
from pipeline.tabular.trainer import FitResult, TrainParams, fit

# Folds inside each fold's training rows, whose level-1 models make the level-2 members'
# training columns (see _level2): 3 keeps their cost near twice the level-1 CV's.
INNER_FOLDS = 3
# seeds = "auto": rounds of every member from the next seed, at most this many in all, each
# begun only while what is left of the CV's time holds ROUND_ROOM times the first round's.
AUTO_SEEDS, ROUND_ROOM = 5, 1.1
# A fold's train score is taken on this many of its training rows at most: predicting every
# training row of every fold cost LightGBM 94 s of a 180 s CV on 200,000 rows.
TRAIN_SCORED = 20_000


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
    """A sweep's CV: each config's fold scores, in the order of its configs."""

    scores: list[FoldScores]
    metric: Metric

    def ranked(self) -> list[FoldScores]:
        """Best first by the metric's direction; failed configs last."""
        key = self.metric.sort_key
        return sorted(self.scores, key=lambda s: (s.failed, key(s.mean_valid) if not s.failed else 0))


@dataclass
class Shared:
    """What every task of a CV or a sweep reads: the features, each fold's rows and each fold's
    in-fold columns (on the CPU, so that Ray's object store holds them once for every worker)."""

    features: Features
    train_rows: list[torch.Tensor]
    valid_rows: list[torch.Tensor]
    device: str
    seed: int
    seeds: int = 1
    offset: int = 0  # the members' seeds start at seed + offset (a further round of seeds = "auto")
    curves: bool = True
    extra: torch.Tensor | None = None  # (folds, rows, k): see pipeline.tabular.infold
    infold_seconds: float = 0.0  # what fitting the in-fold columns cost
    encoders: infold.InFold | None = None  # what made ``extra``: each fold's encoders, for the test rows
    keep: bool = False  # the members' fold models come back with their runs (final = "folds")

    def data(self) -> tuple[TrainingSet, list[torch.Tensor], list[torch.Tensor]]:
        data = TrainingSet(self.features, torch.device(self.device), self.extra)
        return data, [r.to(data.device) for r in self.train_rows], [r.to(data.device) for r in self.valid_rows]


def _check_classes(features: Features, splits: list, folds: int) -> None:
    """Refused up front, not deep in a library: a fold whose training rows hold one class (a
    classifier learns nothing), and for a metric of two classes (AUC), a fold whose rows do."""
    if features.spec.scorer.task.continuous:
        return
    counts = torch.bincount(features.y)
    rarest = int(counts.argmin())
    for k, (train, valid) in enumerate(splits):
        if features.y[train].unique().numel() < 2:
            raise DataError(f"fold {k + 1}'s training rows hold one class: class {features.classes[rarest]!r} has "
                            f"only {int(counts[rarest])} row(s); add rows of it or drop them")
        if features.spec.scorer.binary and features.y[valid].unique().numel() < 2:
            raise ParamError("folds", folds, f"fold {k + 1}'s rows hold one class, and metric "
                             f"{features.spec.scorer.name} needs both; the smaller class has "
                             f"{int(counts[rarest])} rows: give at most {int(counts[rarest])} folds")


def _shared(features: Features, folds: FoldParams, device: torch.device, **options) -> Shared:
    """The folds' rows and, when the table has high-cardinality categories or free text, the
    in-fold columns of each fold, fit on its training rows only."""
    splits = fold_rows(features.y, folds.folds, folds.split, folds.seed, stratify=features.spec.scorer.task.stratify,
                       groups=None if features.groups is None else features.groups.numpy(),
                       times=None if features.times is None else features.times.numpy())
    _check_classes(features, splits, folds.folds)
    train_rows = [tr for tr, _ in splits]
    encoders, extra, started = None, None, time.perf_counter()
    task = features.spec.scorer.task
    if infold.width(features.codes, features.texts, task, task.outputs(features.classes)):
        encoders, extra = infold.fit_infold(features.codes, features.texts, features.y, features.spec.scorer,
                                            task.outputs(features.classes), train_rows, folds.seed)
    return Shared(features, train_rows, [va for _, va in splits], str(device), folds.seed, extra=extra,
                  infold_seconds=time.perf_counter() - started if extra is not None else 0.0, encoders=encoders,
                  **options)


def configs_task(shared: Shared, configs: list[TrainParams], progress: Progress) -> list[FoldScores]:
    """A sweep's task: configs that share one stacked model, trained on every fold at once."""
    data, train_rows, valid_rows = shared.data()
    step = progress.step(f"{len(configs)} {configs[0].model} configs", configs[0].epochs, "epoch",
                         data.metric.higher_is_better)
    result = fit(data.X, data.y, train_rows, configs, metric=data.metric, valid_rows=valid_rows,
                 n_out=data.n_out, seed=shared.seed, curves=shared.curves,
                 on_epoch=lambda epoch, epochs, curves: step.advance(1, curves))
    step.close()
    return [_config_scores(result, column) for column in range(len(configs))]


def sweep_tasks(configs: list[TrainParams], workers: int) -> tuple[list[Task], list[list[int]]]:
    """Configs that can share a stacked model (same group key), split into at most ``workers``
    tasks each: one stacked model per group in this process, a group spread over a cluster.
    Also each task's positions in ``configs``."""
    by_key: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        by_key.setdefault(config.group_key(), []).append(i)
    tasks, positions = [], []
    for indices in by_key.values():
        size = math.ceil(len(indices) / workers)
        for start in range(0, len(indices), size):
            chunk = indices[start:start + size]
            label = ", ".join(_describe(configs[i]) for i in chunk[:3]) + (f" and {len(chunk) - 3} more"
                                                                         if len(chunk) > 3 else "")
            tasks.append(Task(label, ([configs[i] for i in chunk],)))
            positions.append(chunk)
    return tasks, positions


def _describe(config: TrainParams) -> str:
    default = TrainParams()
    return " ".join(f"{k}={v}" for k, v in config.to_dict().items()
                    if k in ("lr", "weight_decay", "dropout", "hidden", "batch_size", "epochs")
                    and v != getattr(default, k)) or config.model


def cross_validate(features: Features, configs: list[TrainParams], folds: FoldParams = FoldParams(), *,
                   device: torch.device = torch.device("cpu"), curves: bool = True, progress: Progress = Progress(),
                   backend=None) -> CVResult:
    """K-fold CV of every config of a grid; configs sharing a group key train as one stacked
    model, or, on a cluster, as a few (each config trains the same in any stack: see
    :func:`pipeline.tabular.trainer.column_generators`)."""
    backend = backend or Local()
    metric = features.spec.scorer
    # log_target "auto" and the value it means train in one stack
    configs = [c.with_(log_target=metric.task.learns_in_log(c.log_target, metric, features.y)) for c in configs]
    shared = _shared(features, folds, device, curves=curves)
    tasks, positions = sweep_tasks(configs, backend.workers)
    scores: list[FoldScores | None] = [None] * len(configs)
    for chunk, results in zip(positions, backend.map(configs_task, shared, tasks, progress)):
        for i, score in zip(chunk, results):
            scores[i] = score
    return CVResult(scores, metric)


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
    kept: list[int] = field(default_factory=list)  # the recipe's members these are (a time limit cuts some)
    fold_of: torch.Tensor | None = None  # (rows,) the fold that validates each row; -1: none (a time split)
    infold_seconds: float = 0.0  # the in-fold columns' fit (target encodings, text models), shared by the members
    seeds: int = 1  # each member's seeds (seeds = "auto": the rounds the time limit left room for)
    fitted: list[list] = field(default_factory=list)  # final = "folds": each kept member's fold models, per round
    encoders: infold.InFold | None = None  # final = "folds": the folds' in-fold encoders, which their models read


@dataclass
class MemberRun:
    """What a CV needs of a member fit on every fold: its predictions of the rows it is scored
    on, per fold, and how its training went (small enough to come back from a Ray worker).
    ``cut``: why a time limit left it out (nothing else is then set)."""

    label: str
    predictions: torch.Tensor | None  # (folds, rows, outputs), on the CPU
    curves: tuple | None = None
    failed_epoch: np.ndarray | None = None
    budget: float | None = None
    seconds: float = 0.0
    shortened: str = ""
    cut: str = ""
    fitted: list = field(default_factory=list)  # its fold models per round, when the CV keeps them


def _fit(shared: Shared, member, deadline: float | None, progress: Progress):
    """``member`` fit on ``shared``'s row sets: the data, the validation rows and the fitted
    member, or the reason a time limit left it out."""
    data, train_rows, valid_rows = shared.data()
    try:
        return data, train_rows, valid_rows, member.fit(data, train_rows, valid_rows=valid_rows, seeds=shared.seeds,
                                                        seed=shared.seed + shared.offset, progress=progress,
                                                        deadline=deadline)
    except OutOfTime as exc:
        return MemberRun(member.label, None, cut=exc.why)


def member_task(shared: Shared, member, deadline: float | None, progress: Progress) -> MemberRun:
    """A recipe CV's task: one member fit on every fold (a torch member: one stacked model),
    predicting each fold's validation rows and the training rows its train score is taken on."""
    done = _fit(shared, member, deadline, progress)
    if isinstance(done, MemberRun):
        return done
    data, train_rows, valid_rows, fitted = done
    report = fitted.report
    wanted = [torch.cat([valid, train]) for valid, train in zip(valid_rows, scored(train_rows, shared.seed))]
    return MemberRun(fitted.label, fitted.predict(data.train, wanted).cpu(), report.curves, report.failed_epoch,
                     report.budget, report.seconds, report.shortened, fitted=[fitted] if shared.keep else [])


def inner_task(shared: Shared, member, deadline: float | None, progress: Progress) -> MemberRun:
    """A stacked recipe's task: one level-1 member fit on the row sets inside every fold's
    training rows, predicting their validation rows (the level-2 training columns)."""
    done = _fit(shared, member, deadline, progress)
    if isinstance(done, MemberRun):
        return done
    data, _, valid_rows, fitted = done
    return MemberRun(fitted.label, fitted.predict(data.train, valid_rows).cpu(), seconds=fitted.report.seconds)


def fit_members(shared: Shared, members: tuple, backend, progress: Progress, budget: Budget | None = None,
                after: int = 0, task=member_task) -> list[MemberRun]:
    """Each member's ``task`` (its CV), as tasks of ``backend``; under a ``budget`` one after
    another, each given an even share of what is left to it and the ``after`` pieces of work
    still to come (on a cluster, which runs them together: all of what these may take)."""
    backend = backend or Local()
    if budget is None or backend.workers > 1:
        deadline = None if budget is None else budget.share(after + 1) if after else budget.deadline
        return backend.map(task, shared, [Task(m.label, (m, deadline)) for m in members], progress)
    runs = []
    for i, member in enumerate(members):
        [run] = backend.map(task, shared, [Task(member.label, (member, budget.share(len(members) - i + after)))],
                            progress)
        runs.append(run)
    return runs


def scored(train_rows: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """The training rows a fold's train score is taken on: all, or a sample of TRAIN_SCORED."""
    generator = torch.Generator().manual_seed(seed)
    return [rows if len(rows) <= TRAIN_SCORED else
            rows[torch.randperm(len(rows), generator=generator)[:TRAIN_SCORED].to(rows.device)] for rows in train_rows]


def _member_scores(run: MemberRun, predictions: torch.Tensor, data: TrainingSet,
                   train_rows: list[torch.Tensor], valid_rows: list[torch.Tensor]) -> FoldScores:
    train, valid = (score_groups(predictions, data.y, rows, data.metric) for rows in (train_rows, valid_rows))
    curves = run.curves
    train_curves, valid_curves = ([], []) if curves is None or len(curves[0]) < 2 else \
        (curves[0].T.tolist(), curves[1].T.tolist())
    return FoldScores(run.label, train, valid, [int(e) for e in run.failed_epoch], train_curves, valid_curves,
                      seconds=run.seconds)


def out_of_fold(predictions: torch.Tensor, valid_rows: list[torch.Tensor]) -> torch.Tensor:
    """(rows, outputs): each row's prediction by the fold that did not train on it (NaN for a
    row no fold validates: the first block of a time split)."""
    oof = torch.full_like(predictions[0], float("nan"))
    for group, rows in zip(predictions, valid_rows):
        oof[rows] = group[rows]
    return oof


def cross_validate_recipe(features: Features, recipe: Recipe, *, device: torch.device = torch.device("cpu"),
                          progress: Progress = Progress(), backend=None,
                          budget: Budget | None = None) -> tuple[RecipeScore, float]:
    """K-fold CV of the blend of the recipe's members (each trained ``recipe.seeds`` times, all
    folds at once; each member one task of ``backend``), within ``budget`` if there is one
    (members it cuts are left out, and noted in it).

    Every member is fit inside the folds, and the weights that blend fold k's predictions are
    fit on the other folds' out-of-fold predictions only, so the blend's fold scores are honest.
    """
    started = time.perf_counter()
    auto = recipe.seeds == "auto"
    shared = _shared(features, recipe.folds, device, seeds=1 if auto else recipe.seeds, keep=recipe.final == "folds")
    stacked = len(recipe.members) + len(recipe.stack) if recipe.stack else 0  # the fits inside the folds, level 2
    first = time.monotonic()
    runs = fit_members(shared, recipe.members, backend, progress, budget, after=stacked)
    seeds = 1 if auto else recipe.seeds
    if auto and not recipe.stack:  # a stack's inner fits would need every round too
        runs, seeds = _more_seeds(shared, recipe.members, runs, backend, progress, budget, time.monotonic() - first)
    if recipe.stack:
        level1 = [(member, run) for member, run in zip(recipe.members, runs) if not run.cut]
        runs += _level2(shared, recipe.folds, level1, recipe.stack, backend, progress, budget)
    kept = [i for i, run in enumerate(runs) if not run.cut]
    if budget is not None:
        budget.cut += [{"member": run.label, "why": run.cut} for run in runs if run.cut]
        budget.shortened += [{"member": run.label, "how": run.shortened} for run in runs if run.shortened]
    if not kept:
        raise TrainingError(f"no member fits in the time limit: {runs[0].label}: {runs[0].cut}; give more time")
    result = _blended(shared, [runs[i] for i in kept], recipe.blend, device)
    result.kept, result.infold_seconds, result.seeds = kept, shared.infold_seconds, seeds
    if shared.keep:
        result.fitted, result.encoders = [runs[i].fitted for i in kept], shared.encoders
    return result, time.perf_counter() - started


def _more_seeds(shared: Shared, members: tuple, runs: list[MemberRun], backend, progress: Progress,
                budget: Budget | None, spent: float) -> tuple[list[MemberRun], int]:
    """seeds = "auto": while the time limit leaves room for another round at the first round's
    pace (``spent`` seconds), every member fit again on the same folds from the next seed, each
    member's predictions averaged over its rounds (out of fold, as the first round's). A round
    that a time limit cuts or shortens is dropped, and ends the rounds. Without a limit: one."""
    seeds = 1
    while budget is not None and seeds < AUTO_SEEDS and budget.left() > ROUND_ROOM * spent:
        again = fit_members(replace(shared, offset=seeds), members, backend, progress, budget)
        if any(run.cut or run.shortened for run, kept in zip(again, runs) if not kept.cut):
            break
        runs = [kept if kept.cut else _averaged(kept, run, seeds) for kept, run in zip(runs, again)]
        seeds += 1
    return runs, seeds


def _averaged(run: MemberRun, again: MemberRun, rounds: int) -> MemberRun:
    """``run`` (the mean of ``rounds`` rounds) and one more round ``again``, as the mean of both."""
    def mean(a, b):
        return None if a is None or b is None else (a * rounds + b) / (rounds + 1)

    return replace(run, predictions=mean(run.predictions, again.predictions), budget=mean(run.budget, again.budget),
                   seconds=run.seconds + again.seconds, failed_epoch=np.maximum(run.failed_epoch, again.failed_epoch),
                   fitted=run.fitted + again.fitted)


def _level2(shared: Shared, folds: FoldParams, level1: list[tuple], stack: tuple, backend, progress: Progress,
            budget: Budget | None) -> list[MemberRun]:
    """The level-2 members' CV on the same folds (see :mod:`pipeline.tabular.stacking`): fold
    k's validation rows take the level-1 members' out-of-fold predictions, and its training rows
    those of the level-1 members fit again inside them (INNER_FOLDS), so no column a fold's
    model learns from was made by a model that saw that fold's labels. Cut, with the reason,
    when that cannot be (a time split, a level-1 member out of time)."""
    labels = [f"{member.label} (level 2)" for member in stack]
    why = ("no level-1 member was kept" if not level1 else
           "a time split leaves its first rows without out-of-fold predictions" if folds.split == "time" else "")
    if why:
        return [MemberRun(label, None, cut=why) for label in labels]
    oof = torch.stack([out_of_fold(run.predictions, shared.valid_rows) for _, run in level1])
    inner, outer = _inner_folds(shared, folds)
    inner_runs = fit_members(inner, tuple(member for member, _ in level1), backend, progress, budget,
                             after=len(stack), task=inner_task)
    if any(run.cut for run in inner_runs):
        return [MemberRun(label, None, cut="its level-1 members' fits inside the folds ran out of time")
                for label in labels]
    metric = shared.features.spec.scorer
    scaled = StackedColumns.fit(oof, metric)
    columns = scaled.columns(oof, metric).unsqueeze(0).repeat(len(shared.train_rows), 1, 1)
    for k, rows in enumerate(shared.train_rows):
        inside = torch.full_like(oof, float("nan"))
        for g in (g for g, of in enumerate(outer) if of == k):
            valid = inner.valid_rows[g]
            inside[:, valid] = torch.stack([run.predictions[g, valid] for run in inner_runs])
        columns[k, rows] = scaled.columns(inside[:, rows], metric)
    level2 = replace(shared, extra=columns if shared.extra is None else torch.cat([shared.extra, columns], 2))
    runs = fit_members(level2, stack, backend, progress, budget)
    for run, label in zip(runs, labels):
        run.label = label
    return runs


def _inner_folds(shared: Shared, folds: FoldParams) -> tuple[Shared, list[int]]:
    """Each fold's training rows split again into INNER_FOLDS, as row sets to fit (with the
    in-fold columns of their fold), and the fold each row set is inside."""
    features, train, valid, outer = shared.features, [], [], []
    for k, rows in enumerate(shared.train_rows):
        groups = None if features.groups is None else features.groups[rows].numpy()
        for inner_train, inner_valid in fold_rows(features.y[rows], INNER_FOLDS, folds.split, folds.seed,
                                                  stratify=features.spec.scorer.task.stratify, groups=groups):
            train.append(rows[inner_train])
            valid.append(rows[inner_valid])
            outer.append(k)
    extra = None if shared.extra is None else shared.extra[outer]
    return replace(shared, train_rows=train, valid_rows=valid, extra=extra), outer


def _blended(shared: Shared, runs: list[MemberRun], blend_with: str, device: torch.device) -> RecipeScore:
    """The members' fold scores and the honest blend of their out-of-fold predictions."""
    data, train_rows, valid_rows = shared.data()
    predictions = [run.predictions.to(device) for run in runs]
    train_scored = scored(train_rows, shared.seed)
    member_scores = [_member_scores(r, p, data, train_scored, valid_rows) for r, p in zip(runs, predictions)]
    oof = torch.stack([out_of_fold(p, valid_rows) for p in predictions])
    fold_of = torch.full((len(data.y),), -1, dtype=torch.int64, device=device)
    for k, rows in enumerate(valid_rows):
        fold_of[rows] = k
    validated = fold_of >= 0
    fold_weights = []
    for rows in valid_rows:
        others = validated.clone()
        others[rows] = False
        fold_weights.append(fit_weights(blend_with, oof[:, others], data.y[others], data.metric))
    blended = torch.stack([blend([p[g] for p in predictions], data.metric, w) for g, w in enumerate(fold_weights)])
    failed = [max(m.failed_epoch[g] for m in member_scores) for g in range(len(valid_rows))]
    if len(runs) == 1:
        curves = member_scores[0].train_curves, member_scores[0].valid_curves
    else:  # each member's fold-mean curves: one line per member in the plot
        curved = [m for m in member_scores if m.train_curves]
        curves = ([np.mean(m.train_curves, axis=0).tolist() for m in curved],
                  [np.mean(m.valid_curves, axis=0).tolist() for m in curved])
    score = FoldScores("blend", score_groups(blended, data.y, train_scored, data.metric),
                       score_groups(blended, data.y, valid_rows, data.metric), failed, *curves)
    weights = fit_weights(blend_with, oof[:, validated], data.y[validated], data.metric)
    return RecipeScore(score, member_scores, weights, fold_weights, oof.cpu(), [r.budget for r in runs],
                       out_of_fold(blended, valid_rows).cpu(), fold_of=fold_of.cpu())
