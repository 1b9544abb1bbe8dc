"""The tabular trainer: every fold and every config of a grid advance in one optimizer step.

The loop is airbench-shaped: data sit on the training device, each step fetches its batch
(features, a ones column and the targets) with one index_select of a device-side index, and
losses and metrics accumulate on the device and are read once, after the last epoch. Gradients
come from the model's hand-written backward pass (:mod:`pipeline.models`) into one flat buffer,
and Adam is written out here, on the one flat parameter tensor of a :class:`StackedRegressor`,
because torch.optim takes one learning rate and weight decay per tensor while a sweep needs one
per config.
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
from pipeline.errors import UsageError
from pipeline.models import ACTIVATION_BUDGET, Architecture, StackedRegressor

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
BETAS, EPS = (0.9, 0.999), 1e-8


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
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch-size must be at least 1"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive number"),
            (self.weight_decay >= 0, "weight-decay must be at least 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
            (self.model != "mlp" or (self.hidden and min(self.hidden) >= 1), "mlp needs hidden sizes >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(f"{message} (got {self})")

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

    model: StackedRegressor
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


def _metric_errors(out: torch.Tensor, y: torch.Tensor, metric: str, log_target: bool) -> torch.Tensor:
    """Per-row quantity whose masked mean gives the metric: squared error or correctness.

    ``out`` (G, N, C, n_out) raw model outputs; ``y`` (N,) labels. log-RMSE compares
    log(max(prediction, 1)) with log(label), as d2l does.
    """
    if metric == "accuracy":
        return (out.argmax(-1) == y.view(1, -1, 1)).float()
    pred = out[..., 0]
    target = y.view(1, -1, 1)
    if metric == "log_rmse":
        logged = pred.clamp_min(0) if log_target else pred.clamp_min(1).log()
        return (logged - target.log()).square()
    price = pred.exp() if log_target else pred
    return (price - target).square()


def _finish_metric(sums: torch.Tensor, counts: torch.Tensor, metric: str) -> torch.Tensor:
    mean = sums / counts
    return mean if metric == "accuracy" else mean.sqrt()


def predict_raw(model: StackedRegressor, X: torch.Tensor) -> torch.Tensor:
    """Raw outputs (G, N, C, n_out) for all rows of ``X``, in chunks that bound memory. ``X`` is
    (N, d), or (N, d + 1) with a last column of ones (the first layer's bias then rides in its product)."""
    width = max(model.sizes[1:]) * model.configs * model.groups
    step = max(1, ACTIVATION_BUDGET // width)
    chunks = [model.forward(X[i:i + step].unsqueeze(0)) for i in range(0, len(X), step)]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)


def to_predictions(raw: torch.Tensor, configs: list[TrainParams], task: str) -> torch.Tensor:
    """Labels' scale: prices for regression (exp of log outputs), class probabilities otherwise."""
    if task == "classification":
        return raw.softmax(-1)
    logged = torch.tensor([c.log_target for c in configs], device=raw.device).view(1, 1, -1)
    out = raw[..., 0]
    return torch.where(logged, out.exp(), out)


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


class RowGather:
    """``X[idx]`` for an index of any shape, as one index_select of whole rows, optionally into
    ``out`` (idx.numel(), d): advanced indexing costs per element on the CPU, about 5x more here."""

    def __init__(self, X: torch.Tensor):
        self.X = X.contiguous()

    def __call__(self, idx: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.index_select(self.X, 0, idx.reshape(-1), out=out)
        return rows if idx.dim() == 1 else rows.view(*idx.shape, -1)


class _Adam:
    """torch.optim.Adam's update (AdamW's when ``decoupled``) on one flat tensor, with a learning
    rate and weight decay per element (per config), in 6-7 in-place ops on preallocated buffers.
    Constants are tensors: a Python float operand costs a tensor conversion per op."""

    def __init__(self, theta: torch.Tensor, lr: torch.Tensor, decay: torch.Tensor | None, decoupled: bool):
        self.theta, self.decoupled = theta, decoupled
        self.decay = decay * lr if decoupled and decay is not None else decay
        # lr * m_hat / (sqrt(v_hat) + eps) with the per-element lr moved into the denominator,
        # (sqrt(v_hat) + eps) / lr: one addcmul with 1/lr and eps/lr instead of a multiply more.
        self.inverse_lr = 1 / lr
        self.eps_over_lr = EPS * self.inverse_lr
        self.exp_avg, self.exp_avg_sq, self.denom = (torch.zeros_like(theta) for _ in range(3))
        self.beta2 = torch.tensor(BETAS[1], device=theta.device)
        self.steps = 0

    def step(self, grad: torch.Tensor, scale: float) -> None:
        """One update with learning rates ``scale * lr`` (``scale`` is the schedule's factor)."""
        self.steps += 1
        if self.decay is not None:
            if self.decoupled:
                self.theta.addcmul_(self.theta, self.decay, value=-scale)
            else:
                grad.addcmul_(self.decay, self.theta)
        self.exp_avg.lerp_(grad, 1 - BETAS[0])
        self.exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - BETAS[1])
        torch.sqrt(self.exp_avg_sq, out=self.denom)
        torch.addcmul(self.eps_over_lr, self.denom, self.inverse_lr, value=1 / math.sqrt(1 - BETAS[1] ** self.steps),
                      out=self.denom)
        self.theta.addcdiv_(self.exp_avg, self.denom, value=-scale / (1 - BETAS[0] ** self.steps))


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
    model = StackedRegressor(arch, G, [c.widths for c in configs], [c.dropout for c in configs], device, generator)
    decays = [c.weight_decay for c in configs]
    adam = _Adam(model.theta, model.per_element([c.lr for c in configs]),
                 model.per_element(decays) if any(decays) else None, first.optimizer == "adamw")
    grad = torch.empty_like(model.theta)
    classify = n_out > 1
    plan = BatchPlan(train_rows, first.batch_size, device)
    weights = plan.weights(1.0 if classify else 2.0)  # d mean-loss / d output = weight * residual
    # Features, a ones column (the first layer's bias rides in its product) and the targets: one
    # gather per step fetches all three.
    table = torch.cat([X, torch.ones(N, 1, device=device), _train_targets(y, first, n_out).to(X.dtype)], dim=1)
    gather = RowGather(table)
    width = max(b - a for a, b in plan.bounds)
    blocks = list(zip(model.blocks(width), model.blocks(width, grad)))
    tracked = torch.zeros(G, C, n_out, width, device=device)  # the epoch's loss terms, to catch non-finite losses

    # Per step: the gather buffer and, per block, its views of the batch, made once.
    buffers, steps = {}, []
    for (start, stop), weight in zip(plan.bounds, weights):
        rows = stop - start
        if rows not in buffers:
            buffers[rows] = torch.empty(G * rows, gather.X.shape[1], device=device)
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
    mask = torch.stack(list(masks.values()), dim=2)  # (G, N, masks)
    history = torch.full((first.epochs if curves else 1, G, C, len(masks)), float("nan"), device=device)
    losses = torch.zeros(first.epochs, G, C, device=device)  # per epoch, summed; only finiteness matters
    dropout = generator if model.use_dropout else None

    total_steps, step_no, cosine = first.epochs * plan.steps, 0, first.schedule == "cosine"
    for epoch in range(first.epochs):
        for index, (buffer, views) in zip(plan.epoch(generator), steps):
            gather(index, out=buffer)
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
            history[epoch if curves else 0] = _evaluate(model, table[:, :d + 1], y, mask, metric, first.log_target)
        if on_epoch:
            on_epoch(epoch + 1, first.epochs)

    # The device values, read once, at the end.
    curves_np, finite = history.cpu().numpy(), torch.isfinite(losses).cpu().numpy()
    failed_np = np.where(finite.all(0), 0, finite.argmin(0) + 1)
    epoch_of_row = np.arange(1, first.epochs + 1) if curves else np.array([first.epochs])
    curves_np[(failed_np > 0) & (epoch_of_row.reshape(-1, 1, 1) >= failed_np)] = np.nan
    names = list(masks)
    return FitResult(
        model=model, configs=list(configs), metric=metric,
        train_curve=curves_np[..., names.index("train")],
        valid_curve=curves_np[..., names.index("valid")] if "valid" in names else None,
        failed_epoch=failed_np, seconds=time.perf_counter() - started,
    )


def _evaluate(model, X, y, mask, metric, log_target) -> torch.Tensor:
    """(G, C, masks) metrics on every mask's rows (``X`` with its ones column), without leaving the device."""
    errors = _metric_errors(predict_raw(model, X), y, metric, log_target)  # (G, N, C)
    return _finish_metric(torch.bmm(errors.transpose(1, 2), mask), mask.sum(1, keepdim=True), metric)
