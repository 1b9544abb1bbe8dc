"""The tabular trainer: every fold and every config of a grid advance in one optimizer step.

The loop is airbench-shaped: data sit on the training device, a batch is an index slice of a
device-side permutation, and losses and metrics accumulate on the device and are read once,
after the last epoch. Adam is written out here, on the one flat parameter tensor of a
:class:`StackedRegressor`, because torch.optim takes one learning rate and weight decay per
tensor while a sweep needs one per config: as a per-element tensor it costs one extra multiply.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.devices import make_generator
from pipeline.errors import UsageError
from pipeline.models import Architecture, StackedRegressor

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine")
BETAS, EPS = (0.9, 0.999), 1e-8
EVAL_CHUNK = 1 << 22  # rows x hidden units evaluated at once, to bound memory in wide sweeps


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
    failed_epoch: np.ndarray  # (groups, configs): first epoch (1-based) with a non-finite loss, 0 if none
    seconds: float

    @property
    def final_train(self) -> np.ndarray:
        return self.train_curve[-1]

    @property
    def final_valid(self) -> np.ndarray | None:
        return None if self.valid_curve is None else self.valid_curve[-1]


def _loss_target(y: torch.Tensor, params: TrainParams) -> torch.Tensor:
    return torch.log(y) if params.log_target else y


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
    """Raw outputs (G, N, C, n_out) for all rows, in chunks that bound memory."""
    width = max(model.sizes[1:]) * model.configs * model.groups
    step = max(1, EVAL_CHUNK // width)
    with torch.no_grad():
        return torch.cat([model.forward(X[i:i + step].unsqueeze(0)) for i in range(0, len(X), step)], dim=1)


def to_predictions(raw: torch.Tensor, configs: list[TrainParams], task: str) -> torch.Tensor:
    """Labels' scale: prices for regression (exp of log outputs), class probabilities otherwise."""
    if task == "classification":
        return raw.softmax(-1)
    logged = torch.tensor([c.log_target for c in configs], device=raw.device).view(1, 1, -1)
    out = raw[..., 0]
    return torch.where(logged, out.exp(), out)


def fit(X: torch.Tensor, y: torch.Tensor, train_rows: list[torch.Tensor], configs: list[TrainParams], *,
        metric: str, valid_rows: list[torch.Tensor] | None = None, n_out: int = 1, seed: int = 0,
        curves: bool = True, on_epoch: Callable[[int, int], None] | None = None) -> FitResult:
    """Train ``len(train_rows)`` groups x ``len(configs)`` models at once.

    Group g trains on rows ``train_rows[g]`` of ``X``/``y`` (already on the training device)
    and is scored on ``valid_rows[g]``. All configs must share :meth:`TrainParams.group_key`.
    With ``curves`` the metrics are computed after every epoch, else only after the last.
    """
    keys = {c.group_key() for c in configs}
    if len(keys) != 1:
        raise UsageError("configs differing in model, depth, activation, epochs, batch size, "
                         "log target, optimizer or schedule cannot share one stacked model")
    first = configs[0]
    device = X.device
    started = time.perf_counter()
    generator = make_generator(seed, device)
    G, C, N = len(train_rows), len(configs), len(X)
    arch = Architecture(first.model, len(first.widths), first.activation, X.shape[1], n_out)
    model = StackedRegressor(arch, G, [c.widths for c in configs], [c.dropout for c in configs], device, generator)
    theta = model.theta.requires_grad_(True)
    lr = model.per_element([c.lr for c in configs])
    decay = model.per_element([c.weight_decay for c in configs])
    decoupled = first.optimizer == "adamw"
    lr_decay = lr * decay
    exp_avg, exp_avg_sq = torch.zeros_like(theta), torch.zeros_like(theta)

    counts = [len(rows) for rows in train_rows]
    n_max, batch = max(counts), first.batch_size
    # Steps per epoch follow the smallest group; the last step takes every row left, so every
    # row is seen once an epoch and all groups step together (the sizes differ by <= 1 in K-fold).
    steps = max(1, math.ceil(min(counts) / batch))
    padded = torch.stack([F.pad(rows.to(device), (0, n_max - len(rows))) for rows in train_rows])
    equal = len(set(counts)) == 1
    count_t = torch.tensor(counts, device=device, dtype=torch.float32).view(G, 1)
    position = torch.arange(n_max, device=device)
    pad_key = (position.view(1, -1) >= count_t).float() * 2  # sorts padding behind the real rows
    target = _loss_target(y, first)
    gather_rows = RowGather(X)

    masks = {}
    for name, rows_list in (("train", train_rows), ("valid", valid_rows or [])):
        if rows_list:
            mask = torch.zeros(G, N, device=device)
            for g, rows in enumerate(rows_list):
                mask[g, rows.to(device)] = 1.0
            masks[name] = mask
    history = torch.full((first.epochs if curves else 1, len(masks), G, C), float("nan"), device=device)
    failed = torch.zeros(G, C, device=device)

    total_steps, step_no = first.epochs * steps, 0
    for epoch in range(first.epochs):
        order = torch.gather(padded, 1, torch.argsort(torch.rand(G, n_max, generator=generator, device=device)
                                                     + pad_key, dim=1))
        epoch_loss = torch.zeros(G, C, device=device)
        for s in range(steps):
            stop = n_max if s == steps - 1 else (s + 1) * batch
            idx = order[:, s * batch:stop]
            out = model.forward(gather_rows(idx), theta, generator=generator)
            if n_out == 1:
                per_row = (out[..., 0] - target[idx].unsqueeze(-1)).square()
            else:
                per_row = F.cross_entropy(out.permute(0, 3, 1, 2), target[idx].unsqueeze(-1).expand(-1, -1, C),
                                          reduction="none")
            if equal:
                loss = per_row.mean(1)
            else:
                valid = (position[s * batch:stop].view(1, -1) < count_t).float()
                loss = (per_row * valid.unsqueeze(-1)).sum(1) / valid.sum(1, keepdim=True)
            theta.grad = None
            loss.sum().backward()
            epoch_loss += loss.detach()
            step_no += 1
            scale = 0.5 * (1 + math.cos(math.pi * (step_no - 1) / total_steps)) if first.schedule == "cosine" else 1.0
            _adam_step(theta, exp_avg, exp_avg_sq, lr, decay, lr_decay, decoupled, step_no, scale)
        failed = torch.where((failed == 0) & ~torch.isfinite(epoch_loss), float(epoch + 1), failed)
        if curves or epoch == first.epochs - 1:
            history[epoch if curves else 0] = _evaluate(model, X, y, masks, metric, first.log_target)
        if on_epoch:
            on_epoch(epoch + 1, first.epochs)

    theta.requires_grad_(False)
    curves_np = history.cpu().numpy()  # the one read of device values
    failed_np = failed.cpu().numpy().astype(int)
    names = list(masks)
    return FitResult(
        model=model, configs=list(configs), metric=metric,
        train_curve=curves_np[:, names.index("train")],
        valid_curve=curves_np[:, names.index("valid")] if "valid" in names else None,
        failed_epoch=failed_np, seconds=time.perf_counter() - started,
    )


class RowGather:
    """``X[idx]`` for a (G, B) index, with X's rows viewed as 16-byte elements.

    torch's CPU index kernel costs per element, so gathering 4 floats per element is about 6x
    faster than ``X[idx]`` on these 2-core machines; the copy is sliced back to d columns.
    """

    def __init__(self, X: torch.Tensor):
        self.width = X.shape[1]
        padded = F.pad(X, (0, -X.shape[1] % 4)).contiguous()
        self.wide = padded.view(torch.complex128) if X.dtype == torch.float32 else padded

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        gathered = self.wide[idx]
        if gathered.dtype == torch.complex128:
            gathered = gathered.view(torch.float32)
        return gathered[..., :self.width]


def _adam_step(theta, exp_avg, exp_avg_sq, lr, decay, lr_decay, decoupled, step, scale):
    """torch.optim.Adam's update (AdamW's when ``decoupled``) with per-element lr and decay."""
    with torch.no_grad():
        grad = theta.grad
        if decoupled:
            theta.addcmul_(theta, lr_decay, value=-scale)
        else:
            grad = grad.addcmul(decay, theta)
        exp_avg.lerp_(grad, 1 - BETAS[0])
        exp_avg_sq.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - BETAS[1] ** step)).add_(EPS)
        theta.addcdiv_(exp_avg * lr, denom, value=-scale / (1 - BETAS[0] ** step))


def _evaluate(model, X, y, masks, metric, log_target) -> torch.Tensor:
    """(len(masks), G, C) metrics on every mask's rows, without leaving the device."""
    errors = _metric_errors(predict_raw(model, X), y, metric, log_target)  # (G, N, C)
    out = []
    for mask in masks.values():
        sums = torch.einsum("gn,gnc->gc", mask, errors)
        out.append(_finish_metric(sums, mask.sum(1, keepdim=True), metric))
    return torch.stack(out)
