"""Image classifiers: softmax regression, an MLP, LeNet, a batch-norm convnet and a ResNet-18.

Every model takes raw uint8 images (B, H, W) or (B, C, H, W) (or floats in [0, 1]) and does its
own scaling, so a saved model needs no separate preprocessing recipe. Each is built for a
:class:`Shape`: its images' channels and size, their pixel statistics and the number of classes
(by default Fashion-MNIST's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from pipeline.constraints import Interval, Satisfies, check
from pipeline.errors import ParamError, UsageError

MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-set pixel statistics (of x / 255)


@dataclass(frozen=True)
class Shape:
    """What a classifier takes and gives: ``channels`` x ``height`` x ``width`` images whose
    pixels (of x / 255) have each channel's ``mean`` and ``std``, and ``classes`` scores. The
    defaults are Fashion-MNIST's."""

    channels: int = 1
    height: int = 28
    width: int = 28
    classes: int = 10
    mean: tuple = (MEAN,)
    std: tuple = (STD,)

    @property
    def pixels(self) -> int:
        return self.channels * self.height * self.width

    def at_least(self, side: int, model: str) -> None:
        """A size the model cannot take is a one-line error before any training."""
        if min(self.height, self.width) < side:
            raise ParamError("size", [self.height, self.width],
                             f"{model} takes images of at least {side}x{side} pixels; declare a larger size")


class Pixels(nn.Module):
    """uint8 (B, H, W) or (B, C, H, W) images, or floats in [0, 1] -> standardised float (B, C, H, W).
    The scale and shift are buffers left out of the state dict: they follow the model to its
    device, and a checkpoint's weights stay those of the layers alone."""

    def __init__(self, shape: Shape):
        super().__init__()
        # each computed in double and rounded once, as a Python scalar operand would be
        for name, values in (("scale", [1 / (255 * s) for s in shape.std]), ("shift", [m / s for m, s in
                                                                                    zip(shape.mean, shape.std)]),
                             ("mean", shape.mean), ("std", shape.std)):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(-1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dtype == torch.uint8:  # one new tensor, scaled in place: a third of the passes
            return x.float().mul_(self.scale).sub_(self.shift)
        return (x - self.mean) / self.std


class Head(nn.Linear):
    """A linear layer with few outputs (the 10 class scores).

    Same parameters and result as nn.Linear, computed as ``(W @ x.T).T``: MKL's CPU sgemm runs
    ``x @ W.T`` two to three times slower when W has only ~10 rows, and this layer is most of
    softmax regression's work. The (B, C) scores are a view of a class-major (C, B) tensor,
    which is the layout the loss wants (see :func:`class_scores`).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias[:, None], self.weight, x.t()).t()


@dataclass(frozen=True)
class Architecture:
    """A classifier's factory and its own params (the factory's keyword arguments) with their
    defaults. ``convnet``: channels_last memory and, on CUDA, bf16 autocast pay off."""

    name: str
    factory: Callable[..., nn.Module]
    defaults: dict
    convnet: bool = False
    rules: dict = field(default_factory=dict)  # what each param takes (pipeline.constraints)

    def own(self, params: dict) -> dict:
        """The params in ``params`` that are this architecture's, checked against its rules."""
        return check({k: v for k, v in params.items() if k in self.defaults}, self.rules)

    def build(self, params: dict, shape: Shape = Shape()) -> nn.Module:
        """The model for ``shape`` with ``params`` over the defaults; any other key is refused."""
        refuse_unknown(self.name, params, self.defaults)
        return self.factory(shape, **{**self.defaults, **self.own(params)})


MODELS: dict[str, Architecture] = {}


def _classifier(name: str, convnet: bool = False, rules: dict | None = None, **defaults) -> Callable:
    """Registers the decorated factory as classifier ``name``, with ``defaults`` for its params
    and the ``rules`` they obey."""
    def register(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = Architecture(name, factory, defaults, convnet, rules or {})
        return factory
    return register


def refuse_unknown(model: str, params: dict, known: Iterable[str]) -> None:
    """A UsageError naming the keys of ``params`` that classifier ``model`` does not take."""
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise UsageError(f"classifier {model!r} has no parameter {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(known))}")


def _widths(value, count: int | None = None) -> bool:
    """Whether ``value`` is a non-empty list (of ``count`` items) of whole numbers >= 1."""
    return isinstance(value, (list, tuple)) and len(value) == (count or len(value)) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)


@_classifier("softmax")
def _softmax(shape: Shape) -> nn.Module:
    """d2l 3.6: softmax regression, one linear layer on the flattened pixels."""
    return nn.Sequential(Pixels(shape), nn.Flatten(), Head(shape.pixels, shape.classes))


@_classifier("mlp", rules={"hidden": Satisfies(lambda h: _widths([h]), "expected one width, a whole number >= 1"),
                           "dropout": Interval(float, 0, 1, open="high")}, hidden=256, dropout=0.0)
def _mlp(shape: Shape, hidden: int, dropout: float) -> nn.Module:
    """d2l 4.2/4.3 (4.6 with ``dropout``): one hidden ReLU layer."""
    return nn.Sequential(
        Pixels(shape), nn.Flatten(),
        nn.Linear(shape.pixels, hidden), nn.ReLU(), nn.Dropout(dropout),
        Head(hidden, shape.classes),
    )


@_classifier("lenet", convnet=True)
def _lenet(shape: Shape) -> nn.Module:
    """d2l 7.6 LeNet-5, with ReLU and max-pooling instead of sigmoid and average-pooling: 16
    maps of 5x5 pixels from 28x28 images."""
    shape.at_least(12, "lenet")
    return nn.Sequential(
        Pixels(shape),
        nn.Conv2d(shape.channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * ((shape.height // 2 - 4) // 2) * ((shape.width // 2 - 4) // 2), 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        Head(84, shape.classes),
    )


# The cnn's widths were measured on 2 CPU cores (`pipeline train` then `evaluate`, 54k training
# images): one conv per stage [16, 32, 64, 128] gave 0.9259 in 10 epochs (117 s) and 0.9276 in 16
# (185 s); a second conv in the two coarse stages, which costs little at 7x7 and 3x3 pixels, gave
# 0.9307 in 12 (167 s), ahead of a second conv in the fine stages (0.9294 in 10, 205 s).
@_classifier("cnn", convnet=True, rules={"channels": Satisfies(
    lambda c: isinstance(c, (list, tuple)) and len(c) > 0 and all(_widths(s if isinstance(s, (list, tuple)) else [s])
                                                                 for s in c),
    "expected a list of stages, each a width or a list of widths")}, channels=[16, 32, [64, 64], [128, 128]])
def _cnn(shape: Shape, channels: list) -> nn.Module:
    """A small modern convnet: stages of conv-BN-ReLU blocks, max-pooling between stages, a
    global-average head. A stage is a width (one conv) or a list of widths (a conv each):
    ``[16, 32, [64, 64], [128, 128]]``."""
    stages = [stage if isinstance(stage, (list, tuple)) else [stage] for stage in channels]
    shape.at_least(2 ** (len(stages) - 1), "cnn")
    layers: list[nn.Module] = [Pixels(shape)]
    width = shape.channels
    for i, stage in enumerate(stages):
        if i:
            layers.append(nn.MaxPool2d(2))
        for out in stage:
            # no conv bias: BatchNorm's shift replaces it
            layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)]
            width = out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), Head(width, shape.classes)]
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


def resnet_backbone(blocks: list[int], use_torchvision: bool | None = None, classes: int = 10) -> nn.Module:
    """ResNet with ``blocks`` BasicBlocks per stage and ``classes`` outputs: torchvision's where it
    imports (or when ``use_torchvision``), :class:`ResNet` elsewhere; their state dicts are
    interchangeable."""
    if use_torchvision is None:
        try:
            import torchvision.models.resnet  # noqa: F401
            use_torchvision = True
        except Exception:  # absent, or a build that does not match this torch
            use_torchvision = False
    if use_torchvision:
        from torchvision.models.resnet import BasicBlock as TorchvisionBlock, ResNet as TorchvisionResNet
        return TorchvisionResNet(TorchvisionBlock, list(blocks), num_classes=classes)
    return ResNet(list(blocks), classes)


# ResNet-18 is a GPU model: about 0.45 GFLOP an image, some 15 minutes an epoch on 2 CPU cores.
@_classifier("resnet", convnet=True, rules={"blocks": Satisfies(
    lambda b: _widths(b, 4), "expected 4 block counts, whole numbers >= 1")}, blocks=[2, 2, 2, 2])
def _resnet(shape: Shape, blocks: list[int]) -> nn.Module:
    """ResNet-18 (``blocks`` 2, 2, 2, 2) for small images, as CIFAR ResNets do it: a 3x3 stride-1
    stem on the images' channels and no max-pool, so the four stages see 28, 14, 7 and 4 pixels
    of a 28x28 image."""
    backbone = resnet_backbone(blocks, classes=shape.classes)
    backbone.conv1 = nn.Conv2d(shape.channels, 64, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(backbone.conv1.weight, mode="fan_out", nonlinearity="relu")
    backbone.maxpool = nn.Identity()
    head = Head(512, shape.classes)
    head.load_state_dict(backbone.fc.state_dict())
    backbone.fc = head
    return nn.Sequential(Pixels(shape), backbone)


def architecture(name: str) -> Architecture:
    """Classifier ``name``'s architecture; an unknown name is a ParamError."""
    if name not in MODELS:
        raise ParamError("model", name, f"not one of {', '.join(MODELS)}")
    return MODELS[name]


def build_classifier(name: str, shape: Shape = Shape(), **params) -> nn.Module:
    """A fresh model by name for ``shape``; ``params`` are the model's own (e.g. ``hidden``) over
    its defaults."""
    return architecture(name).build(params, shape)
