"""The tabular trainer: every fold and every config of a grid advance in one optimizer step.

The loop is airbench-shaped: data sit on the training device, each step fetches its batch
(features, a ones column and the targets) with one index_select of a device-side index, and
losses and metrics accumulate on the device and are read once, after the last epoch. Gradients
come from the model's hand-written backward pass (:mod:`pipeline.models`) into one flat buffer,
and Adam updates the one flat parameter tensor of a :class:`StackedRegressor`: torch's fused
kernel where all models share a learning rate and weight decay (a CV), else an Adam written out
here with one rate and decay per config (a sweep), which torch.optim, with one per tensor, lacks.
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


def _chunk_rows(model: StackedRegressor) -> int:
    """Rows whose widest layer's activations, for all of the model's models, fit ACTIVATION_BUDGET."""
    return max(1, ACTIVATION_BUDGET // (max(model.sizes[1:]) * model.configs * model.groups))


def predict_raw(model: StackedRegressor, X: torch.Tensor) -> torch.Tensor:
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
    transform are prepared once, and the outputs are turned into errors in place, in the
    models' (G, C, n_out, rows) layout, which the masks' product takes as it is."""

    def __init__(self, model: StackedRegressor, X: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                 metric: str, log_target: bool):
        self.model, self.metric, self.log_target = model, metric, log_target
        step = _chunk_rows(model)
        # (d + 1, rows) chunks of X with its ones column: one product serves all groups
        self.chunks = [(start, X[start:start + step].T) for start in range(0, len(X), step)]
        self.blocks = {rows: model.blocks(rows) for rows in {xT.shape[1] for _, xT in self.chunks}}
        self.out = torch.empty(model.groups, model.configs, model.arch.n_out, len(X), device=X.device)
        # log-RMSE compares log(max(prediction, 1)) with log(label), as d2l does
        self.y = y.log() if metric == "log_rmse" else y
        self.mask, self.counts = mask, mask.sum(1, keepdim=True)

    def __call__(self) -> torch.Tensor:
        for start, xT in self.chunks:
            for block in self.blocks[xT.shape[1]]:
                z, _ = self.model.forward_block(block, xT)
                self.out[block.groups, block.configs, :, start:start + xT.shape[1]] = z
        if self.metric == "accuracy":
            errors = (self.out.argmax(2) == self.y).float()
        else:
            errors = self.out[:, :, 0]
            if self.metric == "log_rmse":
                errors.clamp_(min=0) if self.log_target else errors.clamp_(min=1).log_()
            elif self.log_target:
                errors.exp_()
            errors.sub_(self.y).square_()
        mean = torch.bmm(errors, self.mask).div_(self.counts)
        return mean if self.metric == "accuracy" else mean.sqrt_()


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


class _FusedAdam:
    """torch's fused Adam/AdamW kernel (the one behind ``torch.optim.Adam(fused=True)``) called
    directly, for models that share one learning rate and weight decay: one kernel per step in
    place of _Adam's six. (torch.optim's ``step()`` spends ~60 µs in Python per call, more than a
    whole training step of the d2l linear model.)"""

    def __init__(self, theta: torch.Tensor, lr: float, decay: float, decoupled: bool, total_steps: int):
        self.lr, self.decay = lr, decay
        self.kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        self.theta, self.exp_avg, self.exp_avg_sq = [theta], [torch.zeros_like(theta)], [torch.zeros_like(theta)]
        # the kernel reads the step count (for the bias corrections) from a tensor
        self.counts = iter(torch.arange(1, total_steps + 1, dtype=torch.float32, device=theta.device).unbind())

    def step(self, grad: torch.Tensor, scale: float) -> None:
        self.kernel(self.theta, [grad], self.exp_avg, self.exp_avg_sq, [], [next(self.counts)],
                    lr=scale * self.lr, beta1=BETAS[0], beta2=BETAS[1], weight_decay=self.decay, eps=EPS,
                    amsgrad=False, maximize=False)


def _optimizer(model: StackedRegressor, configs: list[TrainParams], total_steps: int) -> _Adam | _FusedAdam:
    lrs, decays = [c.lr for c in configs], [c.weight_decay for c in configs]
    decoupled = configs[0].optimizer == "adamw"
    if len(set(lrs)) == 1 and len(set(decays)) == 1 and hasattr(torch, "_fused_adamw_"):  # a private op
        return _FusedAdam(model.theta, lrs[0], decays[0], decoupled, total_steps)
    return _Adam(model.theta, model.per_element(lrs), model.per_element(decays) if any(decays) else None, decoupled)


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
    grad = torch.empty_like(model.theta)
    classify = n_out > 1
    plan = BatchPlan(train_rows, first.batch_size, device)
    total_steps = first.epochs * plan.steps
    adam = _optimizer(model, configs, total_steps)
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
        model=model, configs=list(configs), metric=metric,
        train_curve=curves_np[..., names.index("train")],
        valid_curve=curves_np[..., names.index("valid")] if "valid" in names else None,
        failed_epoch=failed_np, seconds=time.perf_counter() - started,
    )
