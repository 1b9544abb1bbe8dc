"""Training image classifiers on one device-resident tensor of images.

The loop never syncs with the device inside an epoch: metrics accumulate in device tensors and
are read once per epoch. Batches are index slices of a device-side permutation, augmented on
the device (:func:`pipeline.images.data.augment`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.constraints import FLAG, Interval, OneOf, Satisfies, at_least, param, positive, \
    validate
from pipeline.devices import make_generator, one_cpu_thread, resolve_device
from pipeline.errors import ParamError, TrainingError, UsageError
from pipeline.images.data import augment
from pipeline.images.models import MODELS, Shape, architecture, refuse_unknown
from pipeline.progress import Progress, Step

# Models with fewer parameters train on one CPU thread: measured on 2 cores, softmax regression
# (8k) is faster and steadier on one, the mlp (200k) and the convnets twice as fast on two.
SMALL_MODEL = 50_000
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "onecycle")
# torch.compile's modes; "reduce-overhead" replays CUDA graphs on a GPU, which takes the
# per-kernel launch cost out of the small models' steps
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class TrainingParams:
    """How a classifier trains, whatever its architecture; a bad value is a :class:`ParamError`.
    Numbers are coerced (``epochs = 2.0`` is 2), as the command line and TOML may give either."""

    epochs: int = param(10, at_least(1))
    batch_size: int = param(128, at_least(1))
    optimizer: str = param("adamw", OneOf(*OPTIMIZERS))
    lr: float = param(2e-3, positive(finite=False))  # an infinite lr diverges: a TrainingError says so
    momentum: float = param(0.9, at_least(0, float))  # sgd's only
    weight_decay: float = param(0.05, at_least(0, float))
    schedule: str = param("onecycle", OneOf(*SCHEDULES))
    augment: bool = param(False, FLAG)  # random crops and flips on the device
    crop_pad: int = param(2, at_least(0))  # the crops' zero padding: 0 flips only
    flip: bool = param(True, FLAG)  # the augmentation's mirror images: false where they change the class (digits)
    label_smoothing: float = param(0.0, Interval(float, 0, 1))
    amp: bool = param(True, FLAG)  # bf16 autocast, for convnets on CUDA
    compile: bool | str = param(False, Satisfies(lambda v: v in (False, True, "false", "true", "none", *COMPILE_MODES),
                                                 f"not one of false, true, {', '.join(COMPILE_MODES)}"))

    def __post_init__(self):
        validate(self)


def check_tta(tta: bool, flip) -> None:
    """``--tta`` averages each image with its mirror image: refused for a model trained with
    ``flip = false`` (a mirror is another class there, as for digits)."""
    if tta and flip in (False, "false"):
        raise ParamError("tta", True, "averages each image with its mirror image, and flip = false trains "
                         "without them; drop --tta")


# Each classifier's training, measured on the full data: AdamW with a one-cycle schedule reaches
# the target test accuracies (softmax 0.84, mlp 0.88, lenet 0.89) in 10 epochs, where
# constant-rate Adam or SGD fell short. For the cnn (its widths' measurements are beside it in
# pipeline.images.models), flips help but crops (crop_pad 1 or 2) cost accuracy within 10 epochs,
# and label smoothing helps a little. The resnet follows the cnn, with crops, which pay over
# longer training.
RECIPES: dict[str, TrainingParams] = {
    "softmax": TrainingParams(batch_size=1024, lr=4e-2, weight_decay=0.1),
    "mlp": TrainingParams(),
    "lenet": TrainingParams(lr=3e-3),
    "cnn": TrainingParams(epochs=12, batch_size=256, lr=4e-3, augment=True, crop_pad=0, label_smoothing=0.1),
    "resnet": TrainingParams(epochs=20, batch_size=512, lr=4e-3, augment=True, crop_pad=2, label_smoothing=0.1),
}
_TRAINING_KEYS = tuple(f.name for f in fields(TrainingParams))


@dataclass(frozen=True)
class ClassifierParams:
    """One classifier's resolved params: every param of its architecture, and its training."""

    model: str
    architecture: dict
    training: TrainingParams

    def to_dict(self) -> dict:
        """Flat, as :data:`DEFAULTS` and a checkpoint hold them."""
        return {**asdict(self.training), **self.architecture}


def classifier_params(model: str, params: dict | None = None) -> ClassifierParams:
    """``model``'s defaults updated by ``params``; an unknown key or a bad value is refused."""
    arch = architecture(model)
    params = params or {}
    refuse_unknown(model, params, (*_TRAINING_KEYS, *arch.defaults))
    training = replace(RECIPES[model], **{k: v for k, v in params.items() if k in _TRAINING_KEYS})
    return ClassifierParams(model, {**arch.defaults, **arch.own(params)}, training)


# Every classifier's params with their defaults, flat: what a checkpoint records
DEFAULTS: dict[str, dict] = {name: classifier_params(name).to_dict() for name in MODELS}


def class_scores(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, ...]:
    """Mean cross-entropy and the number of correct predictions of (B, C) ``logits``, on the device.

    Both reduce over the classes of the (C, B) transpose: on the CPU, log-softmax and max over
    10 classes run 10-20x faster along the leading dimension than along the last, and for a
    :class:`Head`'s output the transpose is free.
    """
    scores = logits.float().t()
    loss = F.cross_entropy(scores[None], y[None], label_smoothing=label_smoothing)  # classes on dim 1
    return loss, (scores.max(0).indices == y).sum()


def fit_classifier(
    model_name: str,
    params: dict | None,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    valid_x: torch.Tensor | None = None,
    valid_y: torch.Tensor | None = None,
    *,
    device: torch.device | str = "auto",
    seed: int = 0,
    progress: Progress = Progress(),
    shape: Shape = Shape(),
) -> tuple[nn.Module, list[dict]]:
    """Train ``model_name`` with ``DEFAULTS[model_name]`` updated by ``params``, for images of
    ``shape`` (by default Fashion-MNIST's).

    ``train_x`` is uint8 (N, H, W) or (N, C, H, W), ``train_y`` class indices; pass any index
    subset for folds.
    Returns the model (eval mode, on ``device``) and one history dict per epoch. The same seed on
    the same device gives the same model. Each epoch advances a step of ``progress``, with its
    train and valid cross-entropy.
    """
    p = classifier_params(model_name, params)
    device = resolve_device(device) if isinstance(device, str) else device
    if len(train_x) < 2:
        raise UsageError(f"fit_classifier needs at least 2 training images, got {len(train_x)}")
    x, y = train_x.to(device), train_y.to(device, torch.long)
    valid = None if valid_x is None else (valid_x.to(device), valid_y.to(device, torch.long))
    generator = make_generator(seed, device)  # the batches' order and augmentation
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # weight init and dropout, without disturbing the caller's RNG
        run = _setup(p, len(x), device, shape)
        small = sum(w.numel() for w in run.model.parameters()) < SMALL_MODEL
        with one_cpu_thread(device, enabled=small):
            history = _epochs(run, x, y, valid, generator, progress.step(model_name, p.training.epochs, "epoch"))
    return run.model.eval(), history


@dataclass(frozen=True)
class _Run:
    """A training run's model and what steps it."""

    name: str
    model: nn.Module
    forward: nn.Module  # the model, compiled or not
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler | None
    autocast: torch.autocast
    training: TrainingParams
    device: torch.device
    seen: int  # the images an epoch trains on


def _setup(p: ClassifierParams, n: int, device: torch.device, shape: Shape) -> _Run:
    """The model (weights from torch's global RNG), its optimizer, schedule and autocast for ``n`` images."""
    t, arch = p.training, architecture(p.model)
    seen = n - 1 if n % t.batch_size == 1 else n  # BatchNorm cannot train on a final batch of one sample
    model = arch.build(p.architecture, shape).to(device)
    if arch.convnet:
        model = model.to(memory_format=torch.channels_last)  # faster convs on CPU (oneDNN) and GPU
    forward = _compiled(model, t.compile)
    optimizer = _optimizer(model, t)
    schedule = _schedule(optimizer, t, t.epochs * math.ceil(seen / t.batch_size))
    use_amp = bool(t.amp) and arch.convnet and device.type == "cuda"
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=use_amp)
    return _Run(p.model, model, forward, optimizer, schedule, autocast, t, device, seen)


def _epochs(run: _Run, x: torch.Tensor, y: torch.Tensor, valid: tuple | None, generator: torch.Generator,
            step: Step) -> list[dict]:
    """Every epoch of ``run``, a history row each; ``step`` advances an epoch at a time."""
    history = []
    for epoch in range(1, run.training.epochs + 1):
        start = time.perf_counter()
        stats = _train_epoch(run, x, y, generator)
        if valid is not None:
            stats += _scores(run.model, *valid)
        history.append(_history_row(run, epoch, stats, start))
        step.advance(1, partial(_curves, history[-1]))
    step.close()
    return history


def _train_epoch(run: _Run, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
    """One pass over a fresh permutation: the mean loss and accuracy, as device tensors (no sync)."""
    t = run.training
    run.model.train()
    loss_sum = torch.zeros((), device=run.device)
    correct = torch.zeros((), device=run.device, dtype=torch.long)
    order = torch.randperm(len(x), device=run.device, generator=generator)
    for first in range(0, run.seen, t.batch_size):
        idx = order[first: first + t.batch_size]
        # index_select, not x[idx]: advanced indexing is ~20x slower on CPU for uint8 rows
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        if t.augment and (t.crop_pad or t.flip):  # with neither, augmenting would copy the batch unchanged
            xb = augment(xb, generator, pad=t.crop_pad, flip=t.flip)
        with run.autocast:
            logits = run.forward(xb)
        loss, hits = class_scores(logits, yb, t.label_smoothing)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        if run.schedule is not None:
            run.schedule.step()
        loss_sum.add_(loss.detach(), alpha=len(idx))
        correct += hits
    return [loss_sum / run.seen, correct / run.seen]


def _history_row(run: _Run, epoch: int, stats: list[torch.Tensor], start: float) -> dict:
    """The epoch's scores as numbers, its one device sync; a non-finite training loss ends the run."""
    values = torch.stack([s.float() for s in stats]).tolist()
    if not math.isfinite(values[0]):
        raise TrainingError(f"{run.name}: training loss became non-finite ({values[0]}) in epoch {epoch}; "
                            f"lower lr (now {run.training.lr})")
    valid = values[2:] or [None, None]
    return {"epoch": epoch, "train_loss": values[0], "train_accuracy": values[1],
            "valid_loss": valid[0], "valid_accuracy": valid[1], "seconds": time.perf_counter() - start}


def _curves(row: dict) -> dict:
    """A history row's losses, as progress charts take them."""
    return {name: np.array([[row[f"{name}_loss"]]]) for name in ("train", "valid") if row[f"{name}_loss"] is not None}


def _compiled(model: nn.Module, mode) -> nn.Module:
    """The model, or torch.compile's of it for ``compile = true`` or a mode."""
    if mode in (False, "false", "none"):
        return model
    return torch.compile(model, mode=None if mode in (True, "true") else mode)


def _optimizer(model: nn.Module, t: TrainingParams) -> torch.optim.Optimizer:
    # fused: one kernel for the whole update instead of a dozen small ops per parameter (3x
    # faster per step for the small models here, on CPU and GPU alike)
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay,
                               fused=True)
    cls = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True)


def _schedule(optimizer: torch.optim.Optimizer, t: TrainingParams, total_steps: int):
    """Per-step LR schedule; ``onecycle`` warms up then anneals, which lets few epochs go far."""
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if t.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t.lr, total_steps=total_steps)
    return None


def predict(
    model: nn.Module, x: torch.Tensor, device: torch.device | str = "auto", batch_size: int = 1024,
    tta: bool = False,
) -> torch.Tensor:
    """Float32 logits (N, classes) on ``device`` for images ``x``; ``.softmax(1)`` gives probabilities.
    ``tta``: log of the mean probabilities of each image and its mirror image (the flip that
    training's augmentation uses)."""
    device = resolve_device(device) if isinstance(device, str) else device
    was_training = model.training
    model.eval()
    x = x.to(device)
    with torch.inference_mode():
        def scores(images: torch.Tensor) -> torch.Tensor:
            return torch.cat([model(images[i: i + batch_size]).float() for i in range(0, len(images), batch_size)])
        logits = scores(x)
        if tta:
            logits = (logits.softmax(1) + scores(x.flip(-1)).softmax(1)).div_(2).log_()
    model.train(was_training)
    return logits


def _scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Mean loss and accuracy as device tensors (no sync)."""
    loss, hits = class_scores(predict(model, x, x.device), y)
    return [loss, hits / len(y)]


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | str = "auto",
             tta: bool = False) -> dict:
    """Accuracy, mean cross-entropy, per-class accuracy (recall; None for an absent class) and the
    confusion matrix (rows = true class, columns = predicted) of ``model`` on images ``x``."""
    device = resolve_device(device) if isinstance(device, str) else device
    y = y.to(device, torch.long)
    logits = predict(model, x, device, tta=tta)
    k = logits.shape[1]
    confusion = torch.bincount(y * k + logits.argmax(1), minlength=k**2).reshape(k, k).tolist()
    hits = [row[i] for i, row in enumerate(confusion)]
    counts = [sum(row) for row in confusion]
    return {
        "accuracy": sum(hits) / len(y),
        "loss": F.cross_entropy(logits, y).item(),
        "per_class": [h / c if c else None for h, c in zip(hits, counts)],
        "confusion": confusion,
    }
