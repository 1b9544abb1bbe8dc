"""Training Fashion-MNIST classifiers on one device-resident tensor of images.

The loop never syncs with the device inside an epoch: metrics accumulate in device tensors and
are read once per epoch. Batches are index slices of a device-side permutation, augmented on
the device (:func:`pipeline.images.data.augment`).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.devices import make_generator, one_cpu_thread, resolve_device
from pipeline.errors import ParamError, TrainingError, UsageError
from pipeline.images.data import augment
from pipeline.images.models import CONVNETS, MODELS, NUM_CLASSES, build_classifier
from pipeline.progress import Progress

# Models with fewer parameters train on one CPU thread: measured on 2 cores, softmax regression
# (8k) is faster and steadier on one, the mlp (200k) and the convnets twice as fast on two.
SMALL_MODEL = 50_000
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "cosine", "onecycle")

_TRAINING = {
    "epochs": 10, "batch_size": 128, "optimizer": "adamw", "lr": 2e-3, "momentum": 0.9,
    "weight_decay": 0.05, "schedule": "onecycle", "augment": False, "crop_pad": 2,
    "label_smoothing": 0.0, "amp": True, "compile": False,
}
# Training keys plus each model's own keyword arguments, measured on the full data: AdamW with a
# one-cycle schedule reaches the target test accuracies (softmax 0.84, mlp 0.88, lenet 0.89)
# in 10 epochs, where constant-rate Adam or SGD fell short. For the cnn, flips help but crops
# (crop_pad 1 or 2) cost accuracy within 10 epochs, and label smoothing helps a little. Its
# widths were measured on 2 CPU cores (`pipeline train` then `evaluate`, 54k training images):
# one conv per stage [16, 32, 64, 128] gave 0.9259 in 10 epochs (117 s) and 0.9276 in 16
# (185 s); a second conv in the two coarse stages, which costs little at 7x7 and 3x3 pixels,
# gave 0.9307 in 12 (167 s), ahead of a second conv in the fine stages (0.9294 in 10, 205 s).
DEFAULTS: dict[str, dict] = {
    "softmax": {**_TRAINING, "batch_size": 1024, "lr": 4e-2, "weight_decay": 0.1},
    "mlp": {**_TRAINING, "hidden": 256, "dropout": 0.0},
    "lenet": {**_TRAINING, "lr": 3e-3},
    "cnn": {**_TRAINING, "channels": [16, 32, [64, 64], [128, 128]], "epochs": 12, "batch_size": 256, "lr": 4e-3,
            "augment": True, "crop_pad": 0, "label_smoothing": 0.1},
    # ResNet-18 is a GPU model (about 0.45 GFLOP an image, some 15 minutes an epoch on 2 CPU
    # cores); its recipe follows the cnn's, with crops, which pay over longer training
    "resnet": {**_TRAINING, "blocks": [2, 2, 2, 2], "epochs": 20, "batch_size": 512, "lr": 4e-3,
               "augment": True, "crop_pad": 2, "label_smoothing": 0.1},
}


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
) -> tuple[nn.Module, list[dict]]:
    """Train ``model_name`` with ``DEFAULTS[model_name]`` updated by ``params``.

    ``train_x`` is uint8 (N, 28, 28), ``train_y`` class indices; pass any index subset for folds.
    Returns the model (eval mode, on ``device``) and one history dict per epoch. The same seed on
    the same device gives the same model. Each epoch advances a step of ``progress``, with its
    train and valid cross-entropy.
    """
    if model_name not in DEFAULTS:
        raise ParamError("model", model_name, f"not one of {', '.join(MODELS)}")
    p = {**DEFAULTS[model_name], **(params or {})}
    for key, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if p[key] not in choices:
            raise ParamError(key, p[key], f"not one of {', '.join(choices)}")
    device = resolve_device(device) if isinstance(device, str) else device
    n, bs, epochs = len(train_x), int(p["batch_size"]), int(p["epochs"])
    if n < 2:
        raise UsageError(f"fit_classifier needs at least 2 training images, got {n}")
    seen = n - 1 if n % bs == 1 else n  # BatchNorm cannot train on a final batch of one sample
    steps = math.ceil(seen / bs)

    x, y = train_x.to(device), train_y.to(device, torch.long)
    valid = None if valid_x is None else (valid_x.to(device), valid_y.to(device, torch.long))
    conv = model_name in CONVNETS
    generator = make_generator(seed, device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # weight init and dropout, without disturbing the caller's RNG
        arch = {k: v for k, v in p.items() if k not in _TRAINING}
        model = build_classifier(model_name, _TRAINING, **arch).to(device)
        if conv:
            model = model.to(memory_format=torch.channels_last)  # faster convs on CPU (oneDNN) and GPU
        forward = _compiled(model, p["compile"])
        optimizer = _optimizer(model, p)
        schedule = _schedule(optimizer, p, epochs * steps)
        use_amp = bool(p["amp"]) and conv and device.type == "cuda"
        autocast = torch.autocast(device.type, torch.bfloat16, enabled=use_amp)

        history = []
        small = sum(w.numel() for w in model.parameters()) < SMALL_MODEL
        with one_cpu_thread(device, enabled=small):
            step = progress.step(model_name, epochs, "epoch")
            for epoch in range(1, epochs + 1):
                start = time.perf_counter()
                model.train()
                loss_sum = torch.zeros((), device=device)
                correct = torch.zeros((), device=device, dtype=torch.long)
                order = torch.randperm(n, device=device, generator=generator)
                for first in range(0, seen, bs):
                    idx = order[first: first + bs]
                    # index_select, not x[idx]: advanced indexing is ~20x slower on CPU for uint8 rows
                    xb, yb = x.index_select(0, idx), y.index_select(0, idx)
                    if p["augment"]:
                        xb = augment(xb, generator, pad=int(p["crop_pad"]))
                    with autocast:
                        logits = forward(xb)
                    loss, hits = class_scores(logits, yb, float(p["label_smoothing"]))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if schedule is not None:
                        schedule.step()
                    loss_sum.add_(loss.detach(), alpha=len(idx))
                    correct += hits
                stats = [loss_sum / seen, correct / seen]
                if valid is not None:
                    stats += _scores(model, *valid)
                stats = torch.stack([s.float() for s in stats]).tolist()  # the epoch's one device sync
                if not math.isfinite(stats[0]):
                    raise TrainingError(
                        f"{model_name}: training loss became non-finite ({stats[0]}) in epoch {epoch}; "
                        f"lower lr (now {p['lr']})"
                    )
                row = {"epoch": epoch, "train_loss": stats[0], "train_accuracy": stats[1],
                       "valid_loss": stats[2] if valid else None, "valid_accuracy": stats[3] if valid else None,
                       "seconds": time.perf_counter() - start}
                history.append(row)
                step.advance(1, lambda row=row: {name: np.array([[row[f"{name}_loss"]]]) for name in ("train", "valid")
                                                 if row[f"{name}_loss"] is not None})
            step.close()
    return model.eval(), history


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def _compiled(model: nn.Module, mode) -> nn.Module:
    """``compile = true`` or a torch.compile mode; "reduce-overhead" replays CUDA graphs on a GPU,
    which takes the per-kernel launch cost out of the small models' steps."""
    if mode in (False, "false", "none"):
        return model
    if mode not in (True, "true", *COMPILE_MODES):
        raise ParamError("compile", mode, f"not one of false, true, {', '.join(COMPILE_MODES)}")
    return torch.compile(model, mode=None if mode in (True, "true") else mode)


def _optimizer(model: nn.Module, p: dict) -> torch.optim.Optimizer:
    # fused: one kernel for the whole update instead of a dozen small ops per parameter (3x
    # faster per step for the small models here, on CPU and GPU alike)
    lr, decay = float(p["lr"]), float(p["weight_decay"])
    if p["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(p["momentum"]), weight_decay=decay,
                               fused=True)
    cls = torch.optim.Adam if p["optimizer"] == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=lr, weight_decay=decay, fused=True)


def _schedule(optimizer: torch.optim.Optimizer, p: dict, total_steps: int):
    """Per-step LR schedule; ``onecycle`` warms up then anneals, which lets few epochs go far."""
    if p["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if p["schedule"] == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=float(p["lr"]), total_steps=total_steps)
    return None


def predict(
    model: nn.Module, x: torch.Tensor, device: torch.device | str = "auto", batch_size: int = 1024,
    tta: bool = False,
) -> torch.Tensor:
    """Float32 logits (N, 10) on ``device`` for images ``x``; ``.softmax(1)`` gives probabilities.
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
    confusion = torch.bincount(y * NUM_CLASSES + logits.argmax(1), minlength=NUM_CLASSES**2)
    confusion = confusion.reshape(NUM_CLASSES, NUM_CLASSES).tolist()
    hits = [row[i] for i, row in enumerate(confusion)]
    counts = [sum(row) for row in confusion]
    return {
        "accuracy": sum(hits) / len(y),
        "loss": F.cross_entropy(logits, y).item(),
        "per_class": [h / c if c else None for h, c in zip(hits, counts)],
        "confusion": confusion,
    }
