"""Fashion-MNIST classifiers: softmax regression, an MLP, LeNet and a small batch-norm convnet.

Every model takes raw uint8 images (B, 28, 28) (or floats in [0, 1]) and does its own scaling,
so a saved model needs no separate preprocessing recipe.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from pipeline.errors import ParamError, UsageError
from pipeline.images.data import CLASS_NAMES

NUM_CLASSES = len(CLASS_NAMES)
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics (of x / 255)


class Pixels(nn.Module):
    """uint8 (B, H, W) or float (B, 1, H, W) images -> standardised float (B, 1, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dtype == torch.uint8:  # one new tensor, scaled in place: a third of the passes
            return x.float().mul_(1 / (255 * STD)).sub_(MEAN / STD)
        return (x - MEAN) / STD


class Head(nn.Linear):
    """A linear layer with few outputs (the 10 class scores).

    Same parameters and result as nn.Linear, computed as ``(W @ x.T).T``: MKL's CPU sgemm runs
    ``x @ W.T`` two to three times slower when W has only ~10 rows, and this layer is most of
    softmax regression's work. The (B, C) scores are a view of a class-major (C, B) tensor,
    which is the layout the loss wants (see :func:`class_scores`).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias[:, None], self.weight, x.t()).t()

def _softmax() -> nn.Module:
    """d2l 3.6: softmax regression, one linear layer on the flattened pixels."""
    return nn.Sequential(Pixels(), nn.Flatten(), Head(784, NUM_CLASSES))


def _mlp(hidden: int = 256, dropout: float = 0.0) -> nn.Module:
    """d2l 4.2/4.3 (4.6 with ``dropout``): one hidden ReLU layer."""
    return nn.Sequential(
        Pixels(), nn.Flatten(),
        nn.Linear(784, hidden), nn.ReLU(), nn.Dropout(dropout),
        Head(hidden, NUM_CLASSES),
    )


def _lenet() -> nn.Module:
    """d2l 7.6 LeNet-5, with ReLU and max-pooling instead of sigmoid and average-pooling."""
    return nn.Sequential(
        Pixels(),
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        Head(84, NUM_CLASSES),
    )


def _cnn(channels: tuple[int, ...] | list[int] = (32, 64, 128)) -> nn.Module:
    """A small modern convnet: conv-BN-ReLU blocks, max-pooling between them, global-average head."""
    layers: list[nn.Module] = [Pixels()]
    width = 1
    for i, out in enumerate(channels):
        if i:
            layers.append(nn.MaxPool2d(2))
        # no conv bias: BatchNorm's shift replaces it
        layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
        width = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), Head(width, NUM_CLASSES)]
    return nn.Sequential(*layers)


MODELS = {"softmax": _softmax, "mlp": _mlp, "lenet": _lenet, "cnn": _cnn}
CONVNETS = frozenset({"lenet", "cnn"})  # get channels_last memory and, on CUDA, bf16 autocast


def build_classifier(name: str, training_keys=(), **params) -> nn.Module:
    """A fresh model by name; ``params`` are the model's own keyword arguments (e.g. ``hidden``).
    ``training_keys`` are listed as valid too in the error for an unknown parameter."""
    if name not in MODELS:
        raise ParamError("model", name, f"not one of {', '.join(MODELS)}")
    factory = MODELS[name]
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        valid = sorted(set(accepted) | set(training_keys))
        raise UsageError(
            f"classifier {name!r} has no parameter {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    return factory(**params)
