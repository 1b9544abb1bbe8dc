"""The tabular trainer: every fold and every config of a grid advance in one optimizer step.

The loop is airbench-shaped: data sit on the training device, each step fetches its batch
(features, a ones column and the targets) with one index_select of a device-side index, and
losses and metrics accumulate on the device and are read once, after the last epoch. Gradients
come from the model's hand-written backward pass (:mod:`pipeline.tabular.stacked`) into one
flat buffer, and :mod:`pipeline.tabular.optim` updates the one flat parameter tensor.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.devices import make_generator, one_cpu_thread
from pipeline.errors import ParamError, UsageError
from pipeline.metrics import Metric, log_space, metric_for
from pipeline.progress import Curves
from pipeline.tabular.optim import make_optimizer
from pipeline.tabular.stacked import ACTIVATION_BUDGET, MODELS, Architecture, StackedModel

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle")
WARMUP = 0.05  # onecycle: the share of steps over which the learning rate rises from 0, then a cosine decay


@dataclass(frozen=True)
class TrainParams:
    """One model config. The defaults are d2l 4.10's recipe."""

    model: str = "linear"
    hidden: tuple[int, ...] = (256,)
    activation: str = "relu"
    dropout: float = 0.0
    epochs: int = 100
    lr: float = 5.0
    weight_decay: float = 0.0
    batch_size: int = 64
    log_target: bool | str = False  # train in log space; "auto": whenever the labels allow it
    optimizer: str = "adam"
    schedule: str = "constant"
    standardize: bool = False  # regression: fit each group's standardized targets (mean 0, std 1)
    label_smoothing: float = 0.0  # classification: targets (1 - s) one-hot + s / classes
    submodels: int = 1  # copies from different initialisations, trained in the stack and averaged
    inner_valid: float = 0.0  # share of each group's rows held out to pick the best epoch (0: the last)

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        checks = [
            ("model", self.model in MODELS, f"not one of {', '.join(MODELS)}"),
            ("epochs", self.epochs >= 1, "must be at least 1"),
            ("batch_size", self.batch_size >= 1, "must be at least 1"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "must be a positive number"),
            ("weight_decay", self.weight_decay >= 0, "must be at least 0"),
            ("dropout", 0 <= self.dropout < 1, "must be in [0, 1)"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"not one of {', '.join(OPTIMIZERS)}"),
            ("schedule", self.schedule in SCHEDULES, f"not one of {', '.join(SCHEDULES)}"),
            ("hidden", self.model != "mlp" or (self.hidden and min(self.hidden) >= 1), "an mlp needs widths >= 1"),
            ("log_target", self.log_target in (True, False, "auto"), "not one of true, false, auto"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
            ("submodels", self.submodels >= 1, "must be at least 1"),
            ("inner_valid", 0 <= self.inner_valid < 1, "must be in [0, 1)"),
        ]
        for param, ok, why in checks:
            if not ok:
                raise ParamError(param, getattr(self, param), why)

    @property
    def widths(self) -> tuple[int, ...]:
        return self.hidden if self.model == "mlp" else ()

    def group_key(self) -> tuple:
        """Configs with equal keys can share one stacked model (and one batch order)."""
        return (self.model, len(self.widths), self.activation, self.epochs, self.batch_size, self.log_target,
                self.optimizer, self.schedule, self.standardize, self.label_smoothing, self.submodels,
                self.inner_valid)

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
    averaged; NaN after a failure. The model holds ``configs[c].submodels`` columns per config."""

    model: StackedModel
    configs: list[TrainParams]
    metric: str
    train_curve: np.ndarray
    valid_curve: np.ndarray | None
    # (groups, configs): first epoch (1-based) with a non-finite loss, 0 if none: one whose squared
    # training errors (float32) summed over the epoch overflow, or whose logits are not finite
    failed_epoch: np.ndarray
    seconds: float
    # (groups, configs): the epoch whose weights the model holds (the best on the inner split, else the last)
    best_epoch: np.ndarray | None = None

    def at_best(self, curve: np.ndarray | None) -> np.ndarray | None:
        """(groups, configs): ``curve`` at each model's kept epoch."""
        if curve is None or len(curve) == 1 or self.best_epoch is None:
            return None if curve is None else curve[-1]
        return np.take_along_axis(curve, self.best_epoch[None] - 1, 0)[0]

    @property
    def final_train(self) -> np.ndarray:
        return self.at_best(self.train_curve)

    @property
    def final_valid(self) -> np.ndarray | None:
        return self.at_best(self.valid_curve)


def _chunk_rows(model: StackedModel) -> int:
    """Rows whose widest layer's activations, for all of the model's models, fit ACTIVATION_BUDGET."""
    return max(1, ACTIVATION_BUDGET // (max(model.sizes[1:]) * model.configs * model.groups))


def predict_raw(model: StackedModel, X: torch.Tensor) -> torch.Tensor:
    """Raw outputs (G, N, C, n_out) for all rows of ``X``, in chunks that bound memory. ``X`` is
    (N, d), or (N, d + 1) with a last column of ones (the first layer's bias then rides in its product)."""
    step = _chunk_rows(model)
    chunks = [model.forward(X[i:i + step].unsqueeze(0)) for i in range(0, len(X), step)]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)


def to_predictions(raw: torch.Tensor, configs: list[TrainParams], metric: Metric) -> torch.Tensor:
    """Labels' scale, per model column: values for regression (back from a log target's space),
    class probabilities otherwise."""
    if metric.task == "classification":
        return raw.softmax(-1)
    logged = torch.tensor([c.log_target for c in configs for _ in range(c.submodels)], device=raw.device)
    out = raw[..., 0]
    return torch.where(logged.view(1, 1, -1), log_space(metric)[1](out), out)


def average_submodels(values: torch.Tensor, submodels: int, metric: Metric, dim: int) -> torch.Tensor:
    """Each config's mean over its ``submodels`` adjacent columns on ``dim``, in ``metric``'s space
    (class probabilities as they are): (..., configs * submodels, ...) -> (..., configs, ...)."""
    if submodels == 1:
        return values
    shape = values.shape
    split = values.reshape(*shape[:dim], -1, submodels, *shape[dim + 1:])
    if metric.task == "classification":
        return split.mean(dim + 1)
    return metric.unspace(metric.space(split).mean(dim + 1))


class _Scorer:
    """Every model's metric on each group's masked rows (train, valid, ...) after an epoch, on the
    device: (G, C, masks). Runs every epoch, so the inputs, their blocks and the labels'
    transform are prepared once. A metric that is a mean of row terms takes them in the models'
    (G, C, rows) layout, and one product with the masks averages them all; others (AUC) are
    computed per group and mask.

    When every group's masks cover all rows (a CV's train and valid folds), one product of all
    rows serves every group; otherwise each group's own rows are gathered once, and only they
    are scored (an MLP's held-out and valid rows: half the cost of all rows each epoch)."""

    def __init__(self, model: StackedModel, X: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                 metric: Metric, log_target: bool, submodels: int = 1):
        self.model, self.metric, self.log_target, self.submodels = model, metric, log_target, submodels
        G, N = mask.shape[:2]
        scored = mask.any(2)
        counts = scored.sum(1)
        if bool((counts == N).all()):  # (d + 1, rows) chunks of X with its ones column, shared by all groups
            inputs, y, labels_axis = X.T, y, None
        else:  # (G, d + 1, R) each group's own rows, padded with row 0 at mask weight zero
            R = int(counts.max())
            index = torch.zeros(G, R, dtype=torch.long, device=X.device)
            for g in range(G):
                rows = scored[g].nonzero().squeeze(1)
                index[g, :len(rows)] = rows
            real = (torch.arange(R, device=X.device) < counts[:, None]).float()
            mask = mask.gather(1, index[..., None].expand(-1, -1, mask.shape[2])) * real[..., None]
            inputs, y, labels_axis = X[index].transpose(1, 2), y[index], 1
        step = _chunk_rows(model)
        rows = inputs.shape[-1]
        self.chunks = [(start, inputs[..., start:start + step]) for start in range(0, rows, step)]
        self.blocks = {xT.shape[-1]: model.blocks(xT.shape[-1]) for _, xT in self.chunks}
        self.out = torch.empty(model.groups, model.configs, model.arch.n_out, rows, device=X.device)
        labels = metric.label_space(y) if metric.term else y
        self.y = y
        self.labels = labels if labels_axis is None else labels.unsqueeze(labels_axis)  # (G, 1, R) per group
        self.mask, self.counts = mask, mask.sum(1, keepdim=True)
        self.rows = [[m.nonzero().squeeze(1) for m in group.T] for group in mask]  # for whole-sample metrics

    def _predictions(self) -> torch.Tensor:
        """(G, configs, rows) values, or (G, configs, rows, classes) probabilities: each config's
        submodels averaged."""
        for start, xT in self.chunks:
            for block in self.blocks[xT.shape[-1]]:
                z, _ = self.model.forward_block(block, xT if xT.dim() == 2 else xT[block.groups])
                self.out[block.groups, block.configs, :, start:start + xT.shape[-1]] = z
        if self.metric.task == "classification":
            pred = self.out.softmax(2).transpose(2, 3)
        else:
            pred = self.model.destandardize(self.out[:, :, 0])
            pred = log_space(self.metric)[1](pred) if self.log_target else pred
        return average_submodels(pred, self.submodels, self.metric, 1)

    def __call__(self) -> torch.Tensor:
        pred, metric = self._predictions(), self.metric
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


def _train_targets(y: torch.Tensor, params: TrainParams, n_out: int, metric: Metric) -> torch.Tensor:
    """The loss's targets as columns: (smoothed) one-hot classes, or the label (in log space with log_target)."""
    if n_out > 1:
        return F.one_hot(y, n_out).float() * (1 - params.label_smoothing) + params.label_smoothing / n_out
    return (log_space(metric)[0](y) if params.log_target else y).float().view(-1, 1)


def log_allowed(y: torch.Tensor, metric: Metric) -> bool:
    """Whether labels have a log: rmsle's log1p takes any of its (non-negative) labels."""
    return metric.task == "regression" and (metric.name == "rmsle" or bool((y > 0).all()))


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
        metric: str, valid_rows: list[torch.Tensor] | None = None, n_out: int = 1, seed: int = 0,
        curves: bool = True, on_epoch: Callable[[int, int, Curves | None], None] | None = None) -> FitResult:
    """Train ``len(train_rows)`` groups x ``len(configs)`` models at once.

    Group g trains on rows ``train_rows[g]`` of ``X``/``y`` (already on the training device)
    and is scored on ``valid_rows[g]``. All configs must share :meth:`TrainParams.group_key`.
    With ``curves`` the metrics are computed after every epoch, else only after the last.
    ``on_epoch(epoch, epochs, curves)`` hears each epoch's end; ``curves()`` reads that epoch's
    train and valid metric off the device (None when they are not computed every epoch).
    The loss is the mean squared error for ``n_out == 1``, else cross-entropy over n_out classes.
    The batch orders and inner splits come from ``seed``; each config's initial weights and
    dropout masks from its own generator (see :func:`column_generators`).
    """
    metric = metric_for(metric)
    configs = [c.with_(log_target=log_allowed(y, metric)) if c.log_target == "auto" else c for c in configs]
    keys = {c.group_key() for c in configs}
    if len(keys) != 1:
        raise UsageError("configs differing in model, depth, activation, epochs, batch size, log target, "
                         "optimizer, schedule, standardizing, label smoothing, submodels or inner split "
                         "cannot share one stacked model")
    with one_cpu_thread(X.device, enabled=_step_products(X, train_rows, configs, n_out) < MANY_THREADS):
        return _fit(X, y, train_rows, configs, metric, valid_rows, n_out, seed, curves, on_epoch)


# Multiply-adds per training step above which the CPU's threads share the work. Below it (a d2l
# step is 0.1 M) a second thread only adds synchronisation; a step of 40 MLPs 331-256-256-1 on
# 256 rows (3.7 G) ran 1.7x faster on two threads than on one.
MANY_THREADS = 50_000_000


def _step_products(X: torch.Tensor, train_rows: list, configs: list[TrainParams], n_out: int) -> int:
    """Multiply-adds of one step's forward pass over all groups and model columns."""
    widths = [X.shape[1], *max((c.widths for c in configs), key=sum, default=()), n_out]
    models = len(train_rows) * sum(c.submodels for c in configs)
    return models * configs[0].batch_size * sum(a * b for a, b in zip(widths, widths[1:]))


def _fit(X, y, train_rows, configs, metric, valid_rows, n_out, seed, curves, on_epoch) -> FitResult:
    first = configs[0]
    k = first.submodels
    columns = [c for c in configs for _ in range(k)]  # the stacked model's columns, config after config
    device = X.device
    started = time.perf_counter()
    generator = make_generator(seed, device)  # batch orders and inner splits: the same for every config
    own = column_generators(seed, configs, device)  # initial weights and dropout masks
    G, C, M, N, d = len(train_rows), len(configs), len(columns), len(X), X.shape[1]
    arch = Architecture(first.model, len(first.widths), first.activation, d, n_out)
    model = StackedModel(arch, G, [c.widths for c in columns], [c.dropout for c in columns], device, own)
    selecting = first.inner_valid > 0
    if selecting:
        train_rows, held_out = _inner_split(train_rows, first.inner_valid, generator)
    grad = torch.empty_like(model.theta)
    classify = n_out > 1
    plan = BatchPlan(train_rows, first.batch_size, device)
    total_steps = first.epochs * plan.steps
    adam = make_optimizer(model, columns, total_steps)
    weights = plan.weights(1.0 if classify else 2.0)  # d mean-loss / d output = weight * residual
    targets = _train_targets(y, first, n_out, metric).to(X.dtype)
    standardized = first.standardize and not classify
    if standardized:  # each group's own targets, so that no label outside its rows is used
        for g, rows in enumerate(train_rows):
            model.target_shift[g] = targets[rows, 0].mean()
            model.target_scale[g] = targets[rows, 0].std(correction=0).clamp_min(1e-12)
            # An MLP extrapolates: clipped to the targets it saw, one exp of a log target cannot explode
            # (the MLP's RMSE on diamonds' prices: 437,567 unclipped, 587 clipped).
            model.target_range[g] = torch.stack([targets[rows, 0].min(), targets[rows, 0].max()])
        inverse = (1 / model.target_scale).view(G, 1, 1, 1)
        offset = (-model.target_shift / model.target_scale).view(G, 1, 1, 1)
    # Features, a ones column (the first layer's bias rides in its product) and the targets: one
    # gather per step fetches all three. (index_select of whole rows: advanced indexing, table[idx],
    # costs per element on the CPU, about 5x more here.)
    table = torch.cat([X, torch.ones(N, 1, device=device), targets], dim=1)
    width = max(b - a for a, b in plan.bounds)
    blocks = list(zip(model.blocks(width), model.blocks(width, grad)))
    tracked = torch.zeros(G, M, n_out, width, device=device)  # the epoch's loss terms, to catch non-finite losses

    # Per step: the gather buffer and, per block, its views of the batch, made once.
    buffers, steps = {}, []
    for (start, stop), weight in zip(plan.bounds, weights):
        rows = stop - start
        if rows not in buffers:
            buffers[rows] = torch.empty(G * rows, table.shape[1], device=device)
        batch = buffers[rows].view(G, rows, -1)
        views = []
        for block, _ in blocks:
            x = batch[block.groups, :, :d + 1]
            standard = (inverse[block.groups], offset[block.groups]) if standardized else None
            views.append((x, x.transpose(1, 2), batch[block.groups, :, d + 1:].transpose(1, 2).unsqueeze(1),
                          weight[block.groups], tracked[block.groups, block.configs, :, :rows], standard))
        steps.append((buffers[rows], views))

    masks = {}
    # With an inner split the per-epoch train metric is for the curves only: a sample of the
    # fit rows as large as the held-out ones spares a pass over every row each epoch.
    curve_rows = [rows[:len(out)] for rows, out in zip(train_rows, held_out)] if selecting else train_rows
    for name, rows_list in (("train", curve_rows), ("valid", valid_rows or []), ("select", held_out if selecting else [])):
        if rows_list:
            mask = torch.zeros(G, N, device=device)
            for g, rows in enumerate(rows_list):
                mask[g, rows.to(device)] = 1.0
            masks[name] = mask
    names = list(masks)
    score = _Scorer(model, table[:, :d + 1], y, torch.stack(list(masks.values()), dim=2), metric, first.log_target, k)
    per_epoch = curves or selecting
    history = torch.full((first.epochs if per_epoch else 1, G, C, len(masks)), float("nan"), device=device)
    losses = torch.zeros(first.epochs, G, C, device=device)  # per epoch, summed; only finiteness matters
    dropout = own if model.use_dropout else None
    if selecting:  # the weights of each config's best epoch so far, on its held-out rows
        owner = model.per_model(torch.arange(G * M, device=device, dtype=torch.float32).view(G, M)).long()
        kept = model.theta.clone()
        best = torch.full((G, C), -math.inf if metric.higher_is_better else math.inf, device=device)
        best_epoch = torch.full((G, C), first.epochs, device=device, dtype=torch.long)

    step_no = 0
    with torch.inference_mode():  # skips autograd's bookkeeping, ~7% of a d2l step; tensors made above stay normal
        for epoch in range(first.epochs):
            for index, (buffer, views) in zip(plan.epoch(generator), steps):
                torch.index_select(table, 0, index, out=buffer)
                for (block, grads), (x, xT, target, weight, track, standard) in zip(blocks, views):
                    out, saved = model.forward_block(block, xT, dropout)
                    if classify:  # finite logits give a finite loss, and softmax - one-hot is bounded
                        error = torch.softmax(out, 2).sub_(target)
                        track.add_(error)
                    else:
                        error = out.sub_(target if standard is None else torch.addcmul(standard[1], target, standard[0]))
                        track.addcmul_(error, error)
                    model.backward_block(block, grads, x, saved, error.mul_(weight))
                step_no += 1
                adam.step(grad, _lr_scale(first.schedule, step_no, total_steps))
            torch.sum(tracked.view(G, C, -1), 2, out=losses[epoch])
            tracked.zero_()
            if per_epoch or epoch == first.epochs - 1:
                history[epoch if per_epoch else 0] = score()
            if selecting:
                now = history[epoch, :, :, names.index("select")]
                improved = now > best if metric.higher_is_better else now < best
                best = torch.where(improved, now, best)
                best_epoch.masked_fill_(improved, epoch + 1)
                torch.where(improved.repeat_interleave(k, 1).view(-1)[owner], model.theta, kept, out=kept)
            if on_epoch:
                on_epoch(epoch + 1, first.epochs, (lambda row=history[epoch]: {
                    name: row[:, :, names.index(name)].cpu().numpy() for name in ("train", "valid") if name in names})
                    if per_epoch else None)
        if selecting:
            model.theta.copy_(kept)

    # The device values, read once, at the end.
    curves_np, finite = history.cpu().numpy(), torch.isfinite(losses).cpu().numpy()
    failed_np = np.where(finite.all(0), 0, finite.argmin(0) + 1)
    epoch_of_row = np.arange(1, first.epochs + 1) if per_epoch else np.array([first.epochs])
    curves_np[(failed_np > 0) & (epoch_of_row.reshape(-1, 1, 1) >= failed_np)] = np.nan
    return FitResult(
        model=model, configs=list(configs), metric=metric.name,
        train_curve=curves_np[..., names.index("train")],
        valid_curve=curves_np[..., names.index("valid")] if "valid" in names else None,
        failed_epoch=failed_np, seconds=time.perf_counter() - started,
        best_epoch=best_epoch.cpu().numpy() if selecting else None,
    )
