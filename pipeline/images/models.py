"""Fashion-MNIST classifiers: softmax regression, an MLP, LeNet, a batch-norm convnet and a ResNet-18.

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


def _cnn(channels: tuple | list = (32, 64, 128)) -> nn.Module:
    """A small modern convnet: stages of conv-BN-ReLU blocks, max-pooling between stages, a
    global-average head. A stage is a width (one conv) or a list of widths (a conv each):
    ``[16, 32, [64, 64], [128, 128]]``."""
    layers: list[nn.Module] = [Pixels()]
    width = 1
    for i, stage in enumerate(channels):
        if i:
            layers.append(nn.MaxPool2d(2))
        for out in stage if isinstance(stage, (list, tuple)) else [stage]:
            # no conv bias: BatchNorm's shift replaces it
            layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
            width = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), Head(width, NUM_CLASSES)]
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet's two-conv residual block, named as torchvision's so that weights load either way."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNet(nn.Module):
    """torchvision's ResNet layout (``conv1 bn1 relu maxpool layer1..4 avgpool fc``), for where
    torchvision is not installed: the same parameter names and shapes, the same forward pass."""

    def __init__(self, blocks: list[int], num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, inplanes = (64, 128, 256, 512), 64
        for i, (planes, count) in enumerate(zip(widths, blocks), 1):
            stride = 1 if i == 1 else 2
            layers = [BasicBlock(inplanes, planes, stride)] + [BasicBlock(planes, planes) for _ in range(count - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_backbone(blocks: list[int], use_torchvision: bool | None = None) -> nn.Module:
    """ResNet with ``blocks`` BasicBlocks per stage: torchvision's where it imports (or when
    ``use_torchvision``), :class:`ResNet` elsewhere; their state dicts are interchangeable."""
    if use_torchvision is None:
        try:
            import torchvision.models.resnet  # noqa: F401
            use_torchvision = True
        except Exception:  # absent, or a build that does not match this torch
            use_torchvision = False
    if use_torchvision:
        from torchvision.models.resnet import BasicBlock as TorchvisionBlock, ResNet as TorchvisionResNet
        return TorchvisionResNet(TorchvisionBlock, list(blocks), num_classes=NUM_CLASSES)
    return ResNet(list(blocks), NUM_CLASSES)


def _resnet(blocks: tuple[int, ...] | list[int] = (2, 2, 2, 2)) -> nn.Module:
    """ResNet-18 (``blocks`` 2, 2, 2, 2) for 28x28 images, as CIFAR ResNets do it: a 3x3 stride-1
    stem on the one channel and no max-pool, so the four stages see 28, 14, 7 and 4 pixels."""
    backbone = resnet_backbone(blocks)
    backbone.conv1 = nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
    backbone.maxpool = nn.Identity()
    head = Head(512, NUM_CLASSES)
    head.load_state_dict(backbone.fc.state_dict())
    backbone.fc = head
    return nn.Sequential(Pixels(), backbone)


MODELS = {"softmax": _softmax, "mlp": _mlp, "lenet": _lenet, "cnn": _cnn, "resnet": _resnet}
CONVNETS = frozenset({"lenet", "cnn", "resnet"})  # get channels_last memory and, on CUDA, bf16 autocast


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
