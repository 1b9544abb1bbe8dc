"""The tabular trainer: every fold and every config of a grid advance in one optimizer step.

The loop is airbench-shaped: data sit on the training device, each step fetches its batch
(features, a ones column and the targets) with one index_select of a device-side index, and
losses and metrics accumulate on the device and are read once, after the last epoch. Gradients
come from the model's hand-written backward pass (:mod:`pipeline.tabular.stacked`) into one
flat buffer, and :mod:`pipeline.tabular.optim` updates the one flat parameter tensor.

:func:`fit` plans a run (:class:`_Plan`: the stacked model, the batches, the optimizer, the
target transform), takes its steps (:func:`_train_step`) and keeps its books (:class:`_Books`:
losses, curves, the best epoch on an inner split).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

import numpy as np
import torch

from pipeline.constraints import FLAG, LOG_TARGET, Interval, OneOf, at_least, param, positive, validate
from pipeline.devices import make_generator, one_cpu_thread
from pipeline.errors import UsageError
from pipeline.metrics import Metric, metric_for
from pipeline.progress import Curves
from pipeline.tabular.optim import OPTIMIZERS, make_optimizer
from pipeline.tabular.stacked import ACTIVATION_BUDGET, ACTIVATIONS, MODELS, Architecture, StackedModel, check_widths, widths_of
from pipeline.tabular.budget import OutOfTime, part
from pipeline.tabular.target_transform import TargetTransform

SCHEDULES = ("constant", "cosine", "onecycle")
WARMUP = 0.05  # onecycle: the share of steps over which the learning rate rises from 0, then a cosine decay


@dataclass(frozen=True)
class TrainParams:
    """A torch member's config (linear or MLP); the defaults are d2l 4.10's recipe."""

    model: str = param("linear", OneOf(*MODELS))
    hidden: tuple[int, ...] = (256,)  # checked with the model: a linear model has none
    activation: str = param("relu", OneOf(*ACTIVATIONS))
    dropout: float = param(0.0, Interval(float, 0, 1, open="high"))
    epochs: int = param(100, at_least(1))
    lr: float = param(5.0, positive())
    weight_decay: float = param(0.0, at_least(0, float))
    batch_size: int = param(64, at_least(1))
    log_target: bool | str = param(False, LOG_TARGET)  # train in log space; "auto": whenever the labels allow it
    optimizer: str = param("adam", OneOf(*OPTIMIZERS))
    schedule: str = param("constant", OneOf(*SCHEDULES))
    standardize: bool = param(False, FLAG)  # regression: fit each group's standardized targets (mean 0, std 1)
    label_smoothing: float = param(0.0, Interval(float, 0, 1, open="high"))  # classification: (1 - s) one-hot + s / classes
    submodels: int = param(1, at_least(1))  # copies from different initialisations, trained in the stack and averaged
    # share of each group's rows held out to pick the best epoch (0: the last)
    inner_valid: float = param(0.0, Interval(float, 0, 1, open="high"))
    # with inner_valid: stop once no model has improved for this many epochs (0: never stop early)
    patience: int = param(0, at_least(0))
    max_steps: int = param(0, at_least(0))  # at most the epochs whose optimizer steps make about this many (0: every epoch)

    def __post_init__(self):
        validate(self)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        check_widths(self.model, self.hidden)

    @property
    def widths(self) -> tuple[int, ...]:
        return widths_of(self.model, self.hidden)

    def group_key(self) -> tuple:
        """Configs with equal keys can share one stacked model (and one batch order)."""
        return (self.model, len(self.widths), self.activation, self.epochs, self.batch_size, self.log_target,
                self.optimizer, self.schedule, self.standardize, self.label_smoothing, self.submodels,
                self.inner_valid, self.patience, self.max_steps)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "TrainParams":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown training param {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**values)

    def with_(self, **changes) -> "TrainParams":
        return replace(self, **changes)


@dataclass
class FitResult:
    """Curves are (epochs, groups, configs) arrays of the metric, of each config's submodels
    averaged; NaN after a failure. The model holds ``configs[c].submodels`` columns per config,
    whose raw outputs ``transform`` takes back to the labels' scale."""

    model: StackedModel
    configs: list[TrainParams]
    transform: TargetTransform
    train_curve: np.ndarray
    valid_curve: np.ndarray | None
    # (groups, configs): first epoch (1-based) with a non-finite loss, 0 if none: one whose squared
    # training errors (float32) summed over the epoch overflow, or whose logits are not finite
    failed_epoch: np.ndarray
    seconds: float
    # (groups, configs): the epoch whose weights the model holds (the best on the inner split, else the last)
    best_epoch: np.ndarray | None = None
    epochs_run: int = 0  # fewer than the planned epochs when stopped early
    stopped: str = ""  # why: "patience" (no model improved) or "time" (a deadline)
    planned: int = 0  # the epochs it was to train (the configs', or fewer under max_steps)

    def at_best(self, curve: np.ndarray | None) -> np.ndarray | None:
        """(groups, configs): ``curve`` at each model's kept epoch (the last it trained)."""
        if curve is None or len(curve) == 1:
            return None if curve is None else curve[-1]
        if self.best_epoch is None:
            return curve[self.epochs_run - 1]
        return np.take_along_axis(curve, self.best_epoch[None] - 1, 0)[0]

    @classmethod
    def concat(cls, parts: list["FitResult"]) -> "FitResult":
        """The results of runs on one group each, as one run of all of them."""
        first = parts[0]
        joined = {name: None if getattr(first, name) is None else
                  np.concatenate([getattr(p, name) for p in parts], axis=1 if name.endswith("curve") else 0)
                  for name in ("train_curve", "valid_curve", "failed_epoch", "best_epoch")}
        return cls(StackedModel.concat([p.model for p in parts]), first.configs,
                   TargetTransform.concat([p.transform for p in parts]), seconds=sum(p.seconds for p in parts),
                   epochs_run=max(p.epochs_run for p in parts), planned=first.planned,
                   stopped="time" if any(p.stopped == "time" for p in parts) else first.stopped, **joined)

    @property
    def final_train(self) -> np.ndarray:
        return self.at_best(self.train_curve)

    @property
    def final_valid(self) -> np.ndarray | None:
        return self.at_best(self.valid_curve)


def _chunk_rows(model: StackedModel) -> int:
    """Rows whose widest layer's activations, for all of the model's models, fit ACTIVATION_BUDGET."""
    return max(1, ACTIVATION_BUDGET // (max(model.sizes[1:]) * model.configs * model.groups))


def predict_raw(model: StackedModel, X: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """Raw outputs (G, N, C, n_out) for all rows of ``X``, in chunks that bound memory. ``X`` is
    (N, d), or (N, d + 1) with a last column of ones (the first layer's bias then rides in its
    product); ``extra`` (G, N, k) each group's own further inputs."""
    step = _chunk_rows(model)
    chunks = [model.forward(X[i:i + step].unsqueeze(0), extra=None if extra is None else extra[:, i:i + step])
              for i in range(0, len(X), step)]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)


def predictions(raw: torch.Tensor, transform: TargetTransform, submodels: int) -> torch.Tensor:
    """(G, N, C * submodels, outputs) raw outputs -> (G, N, C, outputs) predictions in the
    labels' scale (class probabilities), each config's submodels averaged."""
    values = transform.inverse(transform.metric.task.predictions(raw))
    return average_submodels(values, submodels, transform.metric, 2)


def average_submodels(values: torch.Tensor, submodels: int, metric: Metric, dim: int) -> torch.Tensor:
    """Each config's mean over its ``submodels`` adjacent columns on ``dim``, in ``metric``'s space
    (class probabilities as they are): (..., configs * submodels, ...) -> (..., configs, ...)."""
    if submodels == 1:
        return values
    shape = values.shape
    split = values.reshape(*shape[:dim], -1, submodels, *shape[dim + 1:])
    return metric.unspace(metric.space(split).mean(dim + 1))


class _Scorer:
    """Every model's metric on each group's masked rows (train, valid, ...) after an epoch, on the
    device: (G, C, masks). Runs every epoch, so the inputs, their blocks and the labels'
    transform are prepared once. A metric that is a mean of row terms takes them in the models'
    (G, C, rows) layout, and one product with the masks averages them all; others (AUC) are
    computed per group and mask.

    When every group's masks cover all rows (a CV's train and valid folds), one product of all
    rows serves every group; otherwise only each group's own rows are scored (an MLP's held-out
    and valid rows: half the cost of all rows each epoch), gathered a chunk at a time so that no
    copy of X is made (G copies of 88,000 rows of 1,206 features took 2.1 GB)."""

    def __init__(self, model: StackedModel, X: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                 transform: TargetTransform, submodels: int = 1, extra: torch.Tensor | None = None):
        self.model, self.transform, self.submodels, self.X, self.extra = model, transform, submodels, X, extra
        metric = self.metric = transform.metric
        G, N = mask.shape[:2]
        scored = mask.any(2)
        counts = scored.sum(1)
        self.index, labels_axis = None, None
        if not bool((counts == N).all()):  # each group's own rows, padded with row 0 at mask weight zero
            R = int(counts.max())
            self.index = torch.zeros(G, R, dtype=torch.long, device=X.device)
            for g in range(G):
                rows = scored[g].nonzero().squeeze(1)
                self.index[g, :len(rows)] = rows
            real = (torch.arange(R, device=X.device) < counts[:, None]).float()
            mask = mask.gather(1, self.index[..., None].expand(-1, -1, mask.shape[2])) * real[..., None]
            y, labels_axis = y[self.index], 1
        rows = N if self.index is None else self.index.shape[1]
        step = _chunk_rows(model)
        self.spans = [(start, min(start + step, rows)) for start in range(0, rows, step)]
        self.blocks = {b - a: model.blocks(b - a) for a, b in self.spans}
        self.out = torch.empty(model.groups, model.configs, model.arch.n_out, rows, device=X.device)
        labels = metric.label_space(y) if metric.term else y
        self.y = y
        self.labels = labels if labels_axis is None else labels.unsqueeze(labels_axis)  # (G, 1, R) per group
        self.mask, self.counts = mask, mask.sum(1, keepdim=True)
        self.rows = [[m.nonzero().squeeze(1) for m in group.T] for group in mask]  # for whole-sample metrics

    def _inputs(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A chunk's inputs: (d, rows) shared by all groups, or (G, d, rows) each group's own; and
        the groups' in-fold columns (G, k, rows)."""
        if self.index is None:
            own = None if self.extra is None else self.extra[:, start:stop].transpose(1, 2)
            return self.X[start:stop].T, own
        index = self.index[:, start:stop]
        own = None if self.extra is None else \
            self.extra.gather(1, index[..., None].expand(-1, -1, self.extra.shape[2])).transpose(1, 2)
        return self.X[index].transpose(1, 2), own

    def _predictions(self) -> torch.Tensor:
        """(G, configs, rows, outputs) predictions in the labels' scale, each config's submodels averaged."""
        for start, stop in self.spans:
            xT, own = self._inputs(start, stop)
            for block in self.blocks[stop - start]:
                z, _ = self.model.forward_block(block, xT if xT.dim() == 2 else xT[block.groups],
                                                extra=None if own is None else own[block.groups])
                self.out[block.groups, block.configs, :, start:stop] = z
        values = self.transform.inverse(self.metric.task.predictions(self.out.transpose(2, 3)))
        return average_submodels(values, self.submodels, self.metric, 1)

    def __call__(self) -> torch.Tensor:
        metric = self.metric
        pred = metric.task.scored(self._predictions())
        if metric.term is None:
            labels = self.y if self.y.dim() == 2 else self.y.expand(len(pred), -1)
            return torch.stack([torch.stack([metric.whole(p.index_select(1, rows), y[rows]) for rows in masks], -1)
                                for p, y, masks in zip(pred, labels, self.rows)])
        terms = metric.term(metric.space(pred), self.labels)
        return metric.finish(torch.bmm(terms, self.mask).div_(self.counts))


class BatchPlan:
    """Which rows each optimizer step trains on.

    Every epoch, each group visits its rows once in a fresh random order, in ``steps`` batches of
    ``batch_size`` rows; steps follow the smallest group and the last batch takes every row
    left, so all groups step together (K-fold sizes differ by at most one row). Smaller groups
    are padded, after their own rows, with copies of their first row: padding only ever falls
    in the last batch, where :meth:`weights` gives it weight zero.
    """

    def __init__(self, train_rows: list[torch.Tensor], batch_size: int, device: torch.device):
        self.rows = [rows.to(device) for rows in train_rows]
        self.counts = [len(rows) for rows in train_rows]
        G, n_max = len(train_rows), max(self.counts)
        self.steps = max(1, math.ceil(min(self.counts) / batch_size))
        self.bounds = [(s * batch_size, (s + 1) * batch_size if s < self.steps - 1 else n_max)
                       for s in range(self.steps)]
        self._order = torch.stack([rows[:1].expand(n_max) for rows in self.rows])  # the padding stays put
        # An epoch's rows laid out step after step, so that each step's index is one contiguous slice.
        flat = torch.arange(G * n_max, device=device).view(G, n_max)
        self._layout = torch.cat([flat[:, a:b].reshape(-1) for a, b in self.bounds])
        self._flat = torch.empty_like(self._layout)
        self._steps = self._flat.split([G * (b - a) for a, b in self.bounds])

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """(G, n_max): each group's rows in a fresh random order, its padding after them.
        (randperm, not argsort of random keys: shuffling is O(n), sorting cost 5x more here.)"""
        for rows, slot in zip(self.rows, self._order):
            perm = torch.randperm(len(rows), generator=generator, device=rows.device)
            torch.index_select(rows, 0, perm, out=slot[:len(rows)])
        return self._order

    def epoch(self, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """This epoch's rows: per step a flat (G * batch,) index, group after group. The
        tensors are reused: each call overwrites the previous epoch's."""
        torch.index_select(self.order(generator).view(-1), 0, self._layout, out=self._flat)
        return self._steps

    def weights(self, scale: float) -> list[torch.Tensor]:
        """Per step, ``scale`` / (the group's rows in the batch): (G, 1, 1, 1), or (G, 1, 1, batch)
        with zeros on the padding where the groups' sizes differ."""
        device = self._flat.device
        out = [torch.full((len(self.counts), 1, 1, 1), scale / (b - a), device=device) for a, b in self.bounds]
        start, stop = self.bounds[-1]
        if len(set(self.counts)) > 1:
            real = torch.tensor(self.counts, device=device).view(-1, 1, 1, 1) - start
            position = torch.arange(stop - start, device=device).view(1, 1, 1, -1)
            out[-1] = (position < real).float() * scale / real
        return out


def _lr_scale(schedule: str, step: int, total: int) -> float:
    """The schedule's factor on the learning rate at ``step`` (1-based) of ``total``."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (step - 1) / total))
    if schedule == "onecycle":
        warm = max(1, round(WARMUP * total))
        if step <= warm:
            return step / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    return 1.0


def _inner_split(train_rows: list[torch.Tensor], share: float, generator: torch.Generator):
    """Each group's rows as (fit rows, held-out rows), the held-out ones a random ``share``."""
    fit_rows, held_out = [], []
    for rows in train_rows:
        order = rows[torch.randperm(len(rows), generator=generator, device=generator.device).to(rows.device)]
        cut = max(1, round(share * len(rows)))
        held_out.append(order[:cut])
        fit_rows.append(order[cut:])
    return fit_rows, held_out


def column_generators(seed: int, configs: list[TrainParams], device: torch.device) -> list[list[torch.Generator]]:
    """Per model column, a generator for its initial weights and one per hidden layer for its
    dropout masks, seeded by the seed, the submodel and the layer alone.

    A config therefore starts from the same weights and draws the same masks in whatever stack
    it trains (a sweep split into Ray tasks trains every config as the local run does), and
    every config of a sweep gets the same random numbers, as scikit-learn's grid search gives
    each candidate the one ``random_state``: configs differ by their params, not by their luck.
    On house, seeding by the config's place instead let the grid's best-of-36 be its luckiest
    draw (0.1241-0.1252), and TPE's 36 trials beat it at 1 of 3 seeds; with shared draws, at 3 of 3
    (``benchmarks/scale.py``)."""
    out = []
    for config in configs:
        for submodel in range(config.submodels):
            # the seeds config 0 had when configs were seeded by place: a lone model's figures stand
            base = ((int(seed) + 1) * 1_000_003 * 1_009 + submodel) * 101
            out.append([make_generator((base + layer) % 2 ** 63, device) for layer in range(len(config.widths) + 1)])
    return out


def fit(X: torch.Tensor, y: torch.Tensor, train_rows: list[torch.Tensor], configs: list[TrainParams], *,
        metric: str | Metric, valid_rows: list[torch.Tensor] | None = None, n_out: int = 1, seed: int = 0,
        curves: bool = True, on_epoch: Callable[[int, int, Curves | None], None] | None = None,
        extra: torch.Tensor | None = None, deadline: float | None = None) -> FitResult:
    """Train ``len(train_rows)`` groups x ``len(configs)`` models at once.

    Group g trains on rows ``train_rows[g]`` of ``X``/``y`` (already on the training device)
    and is scored on ``valid_rows[g]``. All configs must share :meth:`TrainParams.group_key`.
    With ``curves`` the metrics are computed after every epoch, else only after the last.
    ``on_epoch(epoch, epochs, curves)`` hears each epoch's end; ``curves()`` reads that epoch's
    train and valid metric off the device (None when they are not computed every epoch).
    ``extra`` (G, N, k): each group's own further input columns (the in-fold encodings).
    ``deadline`` (``time.monotonic()``): train the epochs that fit before it; OutOfTime when
    not even the first one would.
    The loss is the task's: the mean squared error of (transformed) values, or cross-entropy
    over n_out classes. The batch orders and inner splits come from ``seed``; each config's
    initial weights and dropout masks from its own generator (see :func:`column_generators`).
    """
    metric = metric_for(metric) if isinstance(metric, str) else metric
    configs = [c.with_(log_target=metric.task.learns_in_log(c.log_target, metric, y)) for c in configs]
    if len({c.group_key() for c in configs}) != 1:
        raise UsageError("configs differing in model, depth, activation, epochs, batch size, log target, "
                         "optimizer, schedule, standardizing, label smoothing, submodels or inner split "
                         "cannot share one stacked model")
    sizes = [len(rows) for rows in train_rows]
    if max(sizes) > UNEQUAL * min(sizes):  # a time split's folds: each group in a stack of its own
        each, G = _every(len(train_rows), on_epoch), len(train_rows)
        return FitResult.concat([
            fit(X, y, [rows], configs, metric=metric, valid_rows=None if valid_rows is None else [valid_rows[g]],
                n_out=n_out, seed=seed, curves=curves, extra=None if extra is None else extra[g:g + 1],
                on_epoch=each, deadline=part(deadline, G - g)) for g, rows in enumerate(train_rows)])
    with one_cpu_thread(X.device, enabled=_step_products(X, train_rows, configs, n_out) < MANY_THREADS):
        started = time.perf_counter()
        plan = _Plan(X, y, train_rows, configs, metric, n_out, seed, extra)
        books = _Books(plan, y, valid_rows, curves)
        with torch.inference_mode():  # skips autograd's bookkeeping, ~7% of a d2l step; tensors made above stay normal
            books.epochs_run, books.stopped = _epochs(plan, books, on_epoch, deadline)
            books.keep_best()
        return books.result(time.perf_counter() - started)


PROBE_STEPS = 10  # steps after which a first epoch's time is projected, under a deadline


def _epochs(plan: "_Plan", books: "_Books", on_epoch, deadline: float | None) -> tuple[int, str]:
    """Train epoch after epoch: all, or until no model improves ("patience") or the next epoch
    would end past ``deadline`` ("time"); the epochs run and why they stopped."""
    for epoch in range(plan.epochs):
        started = time.monotonic()
        for step_no, (index, step) in enumerate(zip(plan.batches.epoch(plan.generator), plan.steps), 1):
            _train_step(plan, index, step)
            if deadline is not None and epoch == 0 and step_no == min(PROBE_STEPS, plan.batches.steps):
                projected = (time.monotonic() - started) * plan.batches.steps / step_no
                if started + projected > deadline:
                    raise OutOfTime(f"an epoch would take {projected:.0f} s; its share was "
                                    f"{deadline - started:.0f} s")
        out_of_time = deadline is not None and epoch + 1 < plan.epochs and 2 * time.monotonic() - started > deadline
        books.end_epoch(epoch, on_epoch, last=out_of_time)
        if books.stalled(epoch):
            return epoch + 1, "patience"
        if out_of_time:
            return epoch + 1, "time"
    return plan.epochs, ""



SMALL_TABLE = 25_000_000  # elements of X (100 MB) up to which a run copies it into one table

# Groups stack when their sizes are within this ratio: BatchPlan's steps follow the smallest
# group and its last batch takes every row left, fine for K folds (a row apart), not for a time
# split's growing windows, whose groups then train one after another.
UNEQUAL = 1.25


def _every(groups: int, on_epoch):
    """``on_epoch`` for ``groups`` runs one after another: every ``groups``-th epoch of theirs is
    one epoch of the whole."""
    if on_epoch is None:
        return None
    calls = itertools.count(1)

    def each(epoch: int, epochs: int, curves) -> None:
        call = next(calls)
        if call % groups == 0:
            on_epoch(call // groups, epochs, None)
    return each


# Multiply-adds per training step above which the CPU's threads share the work. Below it (a d2l
# step is 0.1 M) a second thread only adds synchronisation; a step of 40 MLPs 331-256-256-1 on
# 256 rows (3.7 G) ran 1.7x faster on two threads than on one.
MANY_THREADS = 50_000_000


def _step_products(X: torch.Tensor, train_rows: list, configs: list[TrainParams], n_out: int) -> int:
    """Multiply-adds of one step's forward pass over all groups and model columns."""
    widths = [X.shape[1], *max((c.widths for c in configs), key=sum, default=()), n_out]
    models = len(train_rows) * sum(c.submodels for c in configs)
    return models * configs[0].batch_size * sum(a * b for a, b in zip(widths, widths[1:]))


@dataclass
class _BlockStep:
    """One block of models in one step: its views of the step's batch, made once per run."""

    block: object  # stacked.Block of the parameters
    grads: object  # the same Block of the gradient buffer
    x: torch.Tensor  # (Gb, rows, d + 1): features and the ones column
    xT: torch.Tensor
    target: torch.Tensor  # (Gb, 1, outputs, rows)
    weight: torch.Tensor  # d mean-loss / d output per residual
    track: torch.Tensor  # the epoch's squared residuals, to catch non-finite losses
    standard: tuple | None  # regression's per-group (1 / scale, -shift / scale)


class _Plan:
    """What a run trains and how: the stacked model, its target transform, the batches and each
    step's views of them, the optimizer, and the inner split that picks the best epoch."""

    def __init__(self, X, y, train_rows, configs, metric: Metric, n_out: int, seed: int, extra=None):
        first = self.first = configs[0]
        self.configs, self.metric, self.n_out, self.k = configs, metric, n_out, first.submodels
        columns = [c for c in configs for _ in range(self.k)]  # the stacked model's columns, config after config
        device = X.device
        self.generator = make_generator(seed, device)  # batch orders and inner splits: the same for every config
        self.own = column_generators(seed, configs, device)  # initial weights and dropout masks
        self.extra = extra  # (G, N, k): each group's own columns, after X's
        k = 0 if extra is None else extra.shape[2]
        arch = Architecture(first.model, len(first.widths), first.activation, X.shape[1] + k, n_out)
        self.model = StackedModel(arch, len(train_rows), [c.widths for c in columns], [c.dropout for c in columns],
                                  device, self.own)
        self.held_out = None
        if first.inner_valid > 0:
            train_rows, self.held_out = _inner_split(train_rows, first.inner_valid, self.generator)
        self.batches = BatchPlan(train_rows, first.batch_size, device)
        self.train_rows, self.epochs = train_rows, first.epochs
        if first.max_steps:  # more rows, fewer epochs: the schedule spans about max_steps steps
            self.epochs = min(first.epochs, max(1, round(first.max_steps / self.batches.steps)))
        self.total_steps, self.step_no = self.epochs * self.batches.steps, 0
        self.optimizer = make_optimizer(self.model, columns, self.total_steps)
        self.grad = torch.empty_like(self.model.theta)
        self.dropout = self.own if self.model.use_dropout else None
        self.transform = TargetTransform(metric, bool(first.log_target))
        targets = metric.task.train_targets(self.transform.learned(y), n_out, first.label_smoothing).to(X.dtype)
        self.transform.fit(targets[:, 0], train_rows, standardize=first.standardize, clip=first.standardize)
        self.X, self.targets = X, targets
        # A small X is copied once into one table with the ones and targets: a step's batch is then
        # one gather (the d2l CV: 0.135 s, against 0.168 s gathering X and targets apart)
        self.table = torch.cat([X, torch.ones(len(X), 1, device=device), targets], dim=1) \
            if extra is None and X.numel() <= SMALL_TABLE else None
        self.steps = self._step_views(X.shape[1], k)

    def _step_views(self, d: int, k: int) -> list[tuple["_Gather", list[_BlockStep]]]:
        """Per step: its gather and, per block of models, its views of the batch."""
        model, batches, device = self.model, self.batches, self.X.device
        G = model.groups
        width = max(b - a for a, b in batches.bounds)
        blocks = list(zip(model.blocks(width), model.blocks(width, self.grad)))
        self.tracked = torch.zeros(G, model.configs, self.n_out, width, device=device)
        standard = None
        if self.transform.standardized:  # each group's own targets, so that no label outside its rows is used
            scale, shift = (t.to(device, torch.float32).view(G, 1, 1, 1) for t in (self.transform.scale,
                                                                                   self.transform.shift))
            standard = (1 / scale, -shift / scale)
        gathers, steps = {}, []
        for (start, stop), weight in zip(batches.bounds, batches.weights(self.metric.task.residual_scale)):
            rows = stop - start
            if rows not in gathers:
                gathers[rows] = _Gather(self.X, self.targets, self.extra, G, rows, self.table)
            batch = gathers[rows].buffer.view(G, rows, -1)
            views = []
            for block, grads in blocks:
                x = batch[block.groups, :, :d + k + 1]
                views.append(_BlockStep(block, grads, x, x.transpose(1, 2),
                                        batch[block.groups, :, d + k + 1:].transpose(1, 2).unsqueeze(1),
                                        weight[block.groups], self.tracked[block.groups, block.configs, :, :rows],
                                        None if standard is None else tuple(s[block.groups] for s in standard)))
            steps.append((gathers[rows], views))
        return steps


class _Gather:
    """A step's batch, [X | extra | 1 | y]: each row's features, its group's own in-fold columns,
    a ones column (the first layer's bias rides in its product) and the loss's targets. From a
    small run's one ``table``, else from X and the targets as they are, so that a large X is never
    copied whole (a 200,000 x 1,206 X is 965 MB). index_select of whole rows: advanced indexing,
    X[idx], costs per element on the CPU, about 5x more here."""

    def __init__(self, X: torch.Tensor, targets: torch.Tensor, extra: torch.Tensor | None, G: int, rows: int,
                 table: torch.Tensor | None = None):
        device, k = X.device, 0 if extra is None else extra.shape[2]
        self.X, self.targets, self.table = X, targets, table
        self.buffer = torch.empty(G * rows, X.shape[1] + k + 1 + targets.shape[1], device=device)
        if table is None:
            self.x = torch.empty(G * rows, X.shape[1], device=device)
            self.y = torch.empty(G * rows, targets.shape[1], device=device)
            self.ones = torch.ones(G * rows, 1, device=device)
        self.extra = None if extra is None else extra.reshape(-1, k)
        if extra is not None:  # group g's row r is row g * N + r of the groups' stacked columns
            self.own = torch.empty(G * rows, k, device=device)
            self.offsets = torch.arange(G, device=device).repeat_interleave(rows) * extra.shape[1]
            self.index = torch.empty(G * rows, dtype=torch.long, device=device)

    def __call__(self, index: torch.Tensor) -> None:
        if self.table is not None:  # [X | 1 | y] in one table: one gather
            torch.index_select(self.table, 0, index, out=self.buffer)
            return
        torch.index_select(self.X, 0, index, out=self.x)
        torch.index_select(self.targets, 0, index, out=self.y)
        own = []
        if self.extra is not None:
            torch.index_select(self.extra, 0, torch.add(index, self.offsets, out=self.index), out=self.own)
            own = [self.own]
        torch.cat([self.x, *own, self.ones, self.y], dim=1, out=self.buffer)


def _train_step(plan: _Plan, index: torch.Tensor, step: tuple[_Gather, list[_BlockStep]]) -> None:
    """One optimizer step of every model: gather the batch, forward and backward each block,
    then one update of the flat parameters."""
    gather, views = step
    gather(index)
    model, task = plan.model, plan.metric.task
    for view in views:
        out, saved = model.forward_block(view.block, view.xT, plan.dropout)
        goal = view.target if view.standard is None else torch.addcmul(view.standard[1], view.target, view.standard[0])
        error = task.residual(out, goal)
        view.track.addcmul_(error, error)
        model.backward_block(view.block, view.grads, view.x, saved, error.mul_(view.weight))
    plan.step_no += 1
    plan.optimizer.step(plan.grad, _lr_scale(plan.first.schedule, plan.step_no, plan.total_steps))


class _Books:
    """A run's records on the device: each epoch's summed squared residuals (to find the first
    non-finite one), the metric on the train, valid and inner held-out rows, and each model's
    best epoch on the held-out rows with its weights. Read off the device once, at the end."""

    def __init__(self, plan: _Plan, y: torch.Tensor, valid_rows: list[torch.Tensor] | None, curves: bool):
        self.plan, self.epochs_run, self.stopped = plan, plan.epochs, ""
        G, C, device = plan.model.groups, len(plan.configs), plan.X.device
        selecting = self.selecting = plan.held_out is not None
        # With an inner split the per-epoch train metric is for the curves only: a sample of the
        # fit rows as large as the held-out ones spares a pass over every row each epoch.
        curve_rows = [r[:len(out)] for r, out in zip(plan.train_rows, plan.held_out)] if selecting else plan.train_rows
        masks = {}
        for name, rows_list in (("train", curve_rows), ("valid", valid_rows or []), ("select", plan.held_out or [])):
            if rows_list:
                masks[name] = torch.zeros(G, len(y), device=device)
                for g, rows in enumerate(rows_list):
                    masks[name][g, rows.to(device)] = 1.0
        self.names = list(masks)
        X = plan.X if plan.table is None else plan.table[:, :plan.X.shape[1] + 1]  # with its ones column
        self.score = _Scorer(plan.model, X, y, torch.stack(list(masks.values()), dim=2), plan.transform, plan.k,
                             plan.extra)
        self.per_epoch = curves or selecting
        self.history = torch.full((plan.epochs if self.per_epoch else 1, G, C, len(masks)), float("nan"), device=device)
        self.losses = torch.zeros(plan.epochs, G, C, device=device)  # per epoch, summed; only finiteness matters
        if selecting:  # the weights of each config's best epoch so far, on its held-out rows
            model = plan.model
            self.owner = model.per_model(torch.arange(G * model.configs, device=device, dtype=torch.float32)
                                         .view(G, model.configs)).long()
            self.kept = model.theta.clone()
            self.best = torch.full((G, C), -math.inf if plan.metric.higher_is_better else math.inf, device=device)
            self.best_epoch = torch.full((G, C), plan.epochs, device=device, dtype=torch.long)

    def end_epoch(self, epoch: int, on_epoch, last: bool = False) -> None:
        """Record an epoch: its losses, its scores (every epoch, or the last), its best weights."""
        plan = self.plan
        torch.sum(plan.tracked.view(*self.losses.shape[1:], -1), 2, out=self.losses[epoch])
        plan.tracked.zero_()
        if self.per_epoch or last or epoch == plan.epochs - 1:
            self.history[epoch if self.per_epoch else 0] = self.score()
        if self.selecting:
            now = self.history[epoch, :, :, self.names.index("select")]
            improved = now > self.best if plan.metric.higher_is_better else now < self.best
            self.best = torch.where(improved, now, self.best)
            self.best_epoch.masked_fill_(improved, epoch + 1)
            torch.where(improved.repeat_interleave(plan.k, 1).view(-1)[self.owner], plan.model.theta, self.kept,
                        out=self.kept)
        if on_epoch:
            on_epoch(epoch + 1, plan.epochs, (lambda row=self.history[epoch]: {
                name: row[:, :, self.names.index(name)].cpu().numpy() for name in ("train", "valid")
                if name in self.names}) if self.per_epoch else None)

    def stalled(self, epoch: int) -> bool:
        """Whether no model has improved on its held-out rows for ``patience`` epochs (one read
        off the device per epoch, with patience)."""
        patience = self.plan.first.patience
        return bool(patience and self.selecting and epoch + 1 - int(self.best_epoch.max()) >= patience)

    def keep_best(self) -> None:
        if self.selecting:
            self.plan.model.theta.copy_(self.kept)

    def result(self, seconds: float) -> FitResult:
        """The device values, read once."""
        plan, names = self.plan, self.names
        curves, finite = self.history.cpu().numpy(), torch.isfinite(self.losses).cpu().numpy()
        failed = np.where(finite.all(0), 0, finite.argmin(0) + 1)
        epoch_of_row = np.arange(1, plan.epochs + 1) if self.per_epoch else np.array([plan.epochs])
        curves[(failed > 0) & (epoch_of_row.reshape(-1, 1, 1) >= failed)] = np.nan
        return FitResult(
            model=plan.model, configs=list(plan.configs), transform=plan.transform,
            train_curve=curves[..., names.index("train")],
            valid_curve=curves[..., names.index("valid")] if "valid" in names else None,
            failed_epoch=failed, seconds=seconds,
            best_epoch=self.best_epoch.cpu().numpy() if self.selecting else None,
            epochs_run=self.epochs_run, stopped=self.stopped, planned=plan.epochs)
