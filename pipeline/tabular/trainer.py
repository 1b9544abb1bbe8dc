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
from pipeline.metrics import Metric, metric_for
from pipeline.tabular.optim import make_optimizer
from pipeline.tabular.stacked import ACTIVATION_BUDGET, MODELS, Architecture, StackedModel

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")


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
    log_target: bool = False
    optimizer: str = "adam"
    schedule: str = "constant"

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
        ]
        for param, ok, why in checks:
            if not ok:
                raise ParamError(param, getattr(self, param), why)

    @property
    def widths(self) -> tuple[int, ...]:
        return self.hidden if self.model == "mlp" else ()

    def group_key(self) -> tuple:
        """Configs with equal keys can share one stacked model (and one batch order)."""
        return (self.model, len(self.widths), self.activation, self.epochs, self.batch_size,
                self.log_target, self.optimizer, self.schedule)

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
    """Curves are (epochs, groups, configs) arrays of the metric; NaN after a failure."""

    model: StackedModel
    configs: list[TrainParams]
    metric: str
    train_curve: np.ndarray
    valid_curve: np.ndarray | None
    # (groups, configs): first epoch (1-based) with a non-finite loss, 0 if none: one whose squared
    # training errors (float32) summed over the epoch overflow, or whose logits are not finite
    failed_epoch: np.ndarray
    seconds: float

    @property
    def final_train(self) -> np.ndarray:
        return self.train_curve[-1]

    @property
    def final_valid(self) -> np.ndarray | None:
        return None if self.valid_curve is None else self.valid_curve[-1]


def _chunk_rows(model: StackedModel) -> int:
    """Rows whose widest layer's activations, for all of the model's models, fit ACTIVATION_BUDGET."""
    return max(1, ACTIVATION_BUDGET // (max(model.sizes[1:]) * model.configs * model.groups))


def predict_raw(model: StackedModel, X: torch.Tensor) -> torch.Tensor:
    """Raw outputs (G, N, C, n_out) for all rows of ``X``, in chunks that bound memory. ``X`` is
    (N, d), or (N, d + 1) with a last column of ones (the first layer's bias then rides in its product)."""
    step = _chunk_rows(model)
    chunks = [model.forward(X[i:i + step].unsqueeze(0)) for i in range(0, len(X), step)]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)


def to_predictions(raw: torch.Tensor, configs: list[TrainParams], task: str) -> torch.Tensor:
    """Labels' scale: prices for regression (exp of log outputs), class probabilities otherwise."""
    if task == "classification":
        return raw.softmax(-1)
    logged = torch.tensor([c.log_target for c in configs], device=raw.device).view(1, 1, -1)
    out = raw[..., 0]
    return torch.where(logged, out.exp(), out)


class _Scorer:
    """Every model's metric on each group's masked rows (train, valid) after an epoch, on the
    device: (G, C, masks). Runs every epoch, so the row chunks, their blocks and the labels'
    transform are prepared once. A metric that is a mean of row terms takes them in the models'
    (G, C, rows) layout, and one product with the masks averages them all; others (AUC) are
    computed per group and mask."""

    def __init__(self, model: StackedModel, X: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                 metric: Metric, log_target: bool):
        self.model, self.metric, self.log_target = model, metric, log_target
        step = _chunk_rows(model)
        # (d + 1, rows) chunks of X with its ones column: one product serves all groups
        self.chunks = [(start, X[start:start + step].T) for start in range(0, len(X), step)]
        self.blocks = {rows: model.blocks(rows) for rows in {xT.shape[1] for _, xT in self.chunks}}
        self.out = torch.empty(model.groups, model.configs, model.arch.n_out, len(X), device=X.device)
        self.y = y
        self.labels = metric.label_space(y) if metric.term else y
        self.mask, self.counts = mask, mask.sum(1, keepdim=True)
        self.rows = [[m.nonzero().squeeze(1) for m in group.T] for group in mask]  # for whole-sample metrics

    def _predictions(self) -> torch.Tensor:
        """(G, C, rows) values, or (G, C, rows, classes) probabilities."""
        for start, xT in self.chunks:
            for block in self.blocks[xT.shape[1]]:
                z, _ = self.model.forward_block(block, xT)
                self.out[block.groups, block.configs, :, start:start + xT.shape[1]] = z
        if self.metric.task == "classification":
            return self.out.softmax(2).transpose(2, 3)
        values = self.out[:, :, 0]
        return values.exp_() if self.log_target else values

    def __call__(self) -> torch.Tensor:
        pred, metric = self._predictions(), self.metric
        if metric.term is None:
            return torch.stack([torch.stack([metric.whole(p.index_select(1, rows), self.y[rows]) for rows in masks], -1)
                                for p, masks in zip(pred, self.rows)])
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


def _train_targets(y: torch.Tensor, params: TrainParams, n_out: int) -> torch.Tensor:
    """The loss's targets as columns: one-hot classes, or the label (its log with log_target)."""
    if n_out > 1:
        return F.one_hot(y, n_out).float()
    return (torch.log(y) if params.log_target else y).float().view(-1, 1)


def fit(X: torch.Tensor, y: torch.Tensor, train_rows: list[torch.Tensor], configs: list[TrainParams], *,
        metric: str, valid_rows: list[torch.Tensor] | None = None, n_out: int = 1, seed: int = 0,
        curves: bool = True, on_epoch: Callable[[int, int], None] | None = None) -> FitResult:
    """Train ``len(train_rows)`` groups x ``len(configs)`` models at once.

    Group g trains on rows ``train_rows[g]`` of ``X``/``y`` (already on the training device)
    and is scored on ``valid_rows[g]``. All configs must share :meth:`TrainParams.group_key`.
    With ``curves`` the metrics are computed after every epoch, else only after the last.
    The loss is the mean squared error for ``n_out == 1``, else cross-entropy over n_out classes.
    """
    metric = metric_for(metric)
    keys = {c.group_key() for c in configs}
    if len(keys) != 1:
        raise UsageError("configs differing in model, depth, activation, epochs, batch size, "
                         "log target, optimizer or schedule cannot share one stacked model")
    with one_cpu_thread(X.device):
        return _fit(X, y, train_rows, configs, metric, valid_rows, n_out, seed, curves, on_epoch)


def _fit(X, y, train_rows, configs, metric, valid_rows, n_out, seed, curves, on_epoch) -> FitResult:
    first = configs[0]
    device = X.device
    started = time.perf_counter()
    generator = make_generator(seed, device)
    G, C, N, d = len(train_rows), len(configs), len(X), X.shape[1]
    arch = Architecture(first.model, len(first.widths), first.activation, d, n_out)
    model = StackedModel(arch, G, [c.widths for c in configs], [c.dropout for c in configs], device, generator)
    grad = torch.empty_like(model.theta)
    classify = n_out > 1
    plan = BatchPlan(train_rows, first.batch_size, device)
    total_steps = first.epochs * plan.steps
    adam = make_optimizer(model, configs, total_steps)
    weights = plan.weights(1.0 if classify else 2.0)  # d mean-loss / d output = weight * residual
    # Features, a ones column (the first layer's bias rides in its product) and the targets: one
    # gather per step fetches all three. (index_select of whole rows: advanced indexing, table[idx],
    # costs per element on the CPU, about 5x more here.)
    table = torch.cat([X, torch.ones(N, 1, device=device), _train_targets(y, first, n_out).to(X.dtype)], dim=1)
    width = max(b - a for a, b in plan.bounds)
    blocks = list(zip(model.blocks(width), model.blocks(width, grad)))
    tracked = torch.zeros(G, C, n_out, width, device=device)  # the epoch's loss terms, to catch non-finite losses

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
            views.append((x, x.transpose(1, 2), batch[block.groups, :, d + 1:].transpose(1, 2).unsqueeze(1),
                          weight[block.groups],
                          tracked[block.groups, block.configs, :, :rows]))
        steps.append((buffers[rows], views))

    masks = {}
    for name, rows_list in (("train", train_rows), ("valid", valid_rows or [])):
        if rows_list:
            mask = torch.zeros(G, N, device=device)
            for g, rows in enumerate(rows_list):
                mask[g, rows.to(device)] = 1.0
            masks[name] = mask
    score = _Scorer(model, table[:, :d + 1], y, torch.stack(list(masks.values()), dim=2), metric, first.log_target)
    history = torch.full((first.epochs if curves else 1, G, C, len(masks)), float("nan"), device=device)
    losses = torch.zeros(first.epochs, G, C, device=device)  # per epoch, summed; only finiteness matters
    dropout = generator if model.use_dropout else None

    step_no, cosine = 0, first.schedule == "cosine"
    with torch.inference_mode():  # skips autograd's bookkeeping, ~7% of a d2l step; tensors made above stay normal
        for epoch in range(first.epochs):
            for index, (buffer, views) in zip(plan.epoch(generator), steps):
                torch.index_select(table, 0, index, out=buffer)
                for (block, grads), (x, xT, target, weight, track) in zip(blocks, views):
                    out, saved = model.forward_block(block, xT, dropout)
                    if classify:  # finite logits give a finite loss, and softmax - one-hot is bounded
                        error = torch.softmax(out, 2).sub_(target)
                        track.add_(error)
                    else:
                        error = out.sub_(target)
                        track.addcmul_(error, error)
                    model.backward_block(block, grads, x, saved, error.mul_(weight))
                step_no += 1
                scale = 0.5 * (1 + math.cos(math.pi * (step_no - 1) / total_steps)) if cosine else 1.0
                adam.step(grad, scale)
            torch.sum(tracked, (2, 3), out=losses[epoch])
            tracked.zero_()
            if curves or epoch == first.epochs - 1:
                history[epoch if curves else 0] = score()
            if on_epoch:
                on_epoch(epoch + 1, first.epochs)

    # The device values, read once, at the end.
    curves_np, finite = history.cpu().numpy(), torch.isfinite(losses).cpu().numpy()
    failed_np = np.where(finite.all(0), 0, finite.argmin(0) + 1)
    epoch_of_row = np.arange(1, first.epochs + 1) if curves else np.array([first.epochs])
    curves_np[(failed_np > 0) & (epoch_of_row.reshape(-1, 1, 1) >= failed_np)] = np.nan
    names = list(masks)
    return FitResult(
        model=model, configs=list(configs), metric=metric.name,
        train_curve=curves_np[..., names.index("train")],
        valid_curve=curves_np[..., names.index("valid")] if "valid" in names else None,
        failed_epoch=failed_np, seconds=time.perf_counter() - started,
    )
