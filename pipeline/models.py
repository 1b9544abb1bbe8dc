"""Tabular models as one stacked tensor program: G row groups (folds) x C configs at once.

A stacked model holds the parameters of G*C independent linear or MLP models in ONE flat
tensor. Every config of a group sees that group's rows, so the first layer is a single batched
matmul of the group's batch (G, B, d) with (G, d, C*H) weights; the configs may differ in
learning rate, weight decay, dropout and hidden width (narrower ones are zero-padded to the
widest and masked, which keeps their padding exactly zero under Adam and weight decay).
torch.func.vmap over module copies would give the same maths with one kernel per config and
layer; stacking is what makes a 240-model sweep one matmul per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.errors import UsageError

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "silu": F.silu, "elu": F.elu}
MODEL_KINDS = ("linear", "mlp")
NARROW = 4


@dataclass(frozen=True)
class Architecture:
    """What the configs of one stacked model share; widths and dropout may differ per config."""

    kind: str
    depth: int  # hidden layers: 0 for linear
    activation: str
    n_in: int
    n_out: int

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise UsageError(f"model {self.kind!r} is not one of {', '.join(MODEL_KINDS)}")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"activation {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")


class StackedRegressor:
    """Parameters of ``groups`` x ``len(hidden)`` models in one flat tensor ``theta``.

    ``hidden[c]`` is config c's tuple of hidden widths (empty for linear); ``dropout[c]`` its
    dropout rate. Layer l has weights of shape (G, C, fan_in, fan_out) padded to the widest
    config, stored in ``theta`` so that an optimizer step over all models is a few
    element-wise ops on one tensor. The first layer's weights are laid out (G, d, C, H) so
    that they reshape, without a copy, into the (G, d, C*H) matrix of the shared matmul.
    """

    def __init__(self, arch: Architecture, groups: int, hidden: list[tuple[int, ...]],
                 dropout: list[float], device: torch.device, generator: torch.Generator | None = None):
        self.arch, self.groups, self.configs, self.device = arch, groups, len(hidden), device
        self.hidden = [tuple(h) for h in hidden]
        widths = [max(h[layer] for h in self.hidden) for layer in range(arch.depth)]
        self.sizes = [arch.n_in, *widths, arch.n_out]
        G, C = groups, self.configs
        # (shape, axis of the config index) of each tensor: W0, b0, W1, b1, ...
        self.shapes: list[tuple[tuple[int, ...], int]] = []
        for layer, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            weight = ((G, fan_in, C, fan_out), 2) if layer == 0 else ((G, C, fan_in, fan_out), 1)
            self.shapes += [weight, ((G, C, fan_out), 1)]
        self.theta = torch.zeros(sum(math.prod(s) for s, _ in self.shapes), device=device)
        # masks[l] (C, width) zeroes the padded units of layer l's output for narrower configs
        self.masks = [
            torch.tensor([[1.0 if u < h[layer] else 0.0 for u in range(widths[layer])] for h in self.hidden],
                         device=device)
            for layer in range(arch.depth)
        ]
        self.dropout = torch.tensor(dropout, device=device, dtype=torch.float32)
        self.use_dropout = any(p > 0 for p in dropout)
        self._init(generator)

    def views(self, theta: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The weight and bias tensors as views into ``theta`` (alternating W, b per layer)."""
        theta = self.theta if theta is None else theta
        out, offset = [], 0
        for shape, _ in self.shapes:
            size = math.prod(shape)
            out.append(theta[offset:offset + size].view(shape))
            offset += size
        return out

    def _init(self, generator):
        """nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases,
        with fan_in the config's own width; padded units stay zero."""
        params = self.views()
        for layer in range(len(self.sizes) - 1):
            weight, bias = params[2 * layer], params[2 * layer + 1]
            for c, widths in enumerate(self.hidden):
                fan_in = self.arch.n_in if layer == 0 else widths[layer - 1]
                fan_out = self.arch.n_out if layer == self.arch.depth else widths[layer]
                bound = 1.0 / math.sqrt(fan_in)
                config_weight = weight[:, :, c] if layer == 0 else weight[:, c]
                for tensor in (config_weight[:, :fan_in, :fan_out], bias[:, c, :fan_out]):
                    values = torch.rand(tensor.shape, generator=generator, device=self.device)
                    tensor.copy_(values.mul_(2 * bound).sub_(bound))

    def per_element(self, values: list[float]) -> torch.Tensor:
        """Spread one value per config over every element of ``theta`` (for per-config lr, wd)."""
        column = torch.tensor(values, device=self.device, dtype=torch.float32)
        spread = []
        for shape, axis in self.shapes:
            view = [1] * len(shape)
            view[axis] = -1
            spread.append(column.view(view).expand(shape).reshape(-1))
        return torch.cat(spread)

    def forward(self, x: torch.Tensor, theta: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` (G or 1, B, d) -> outputs (G, B, C, n_out). Dropout applies when a generator is given."""
        params = self.views(theta)
        G, C = self.groups, self.configs
        act = ACTIVATIONS[self.arch.activation]
        weight, bias = params[0], params[1]
        # First layer: one product for all configs of a group, (.., B, d) @ (G, d, C*H). For a
        # handful of outputs (the linear model) multiply-and-sum beats CPU bmm's gemv path ~4x.
        weight = weight.reshape(G, self.sizes[0], -1)
        if weight.shape[-1] <= NARROW:
            h = (x.unsqueeze(-1) * weight.unsqueeze(1)).sum(2)
        else:
            h = torch.matmul(x, weight)
        h = h.view(G, -1, C, self.sizes[1]) + bias.view(G, 1, C, -1)
        for layer in range(1, len(self.sizes) - 1):
            h = act(h) * self.masks[layer - 1]
            if generator is not None and self.use_dropout:
                keep = torch.rand(h.shape, generator=generator, device=h.device) >= self.dropout.view(1, 1, C, 1)
                h = h * keep / (1 - self.dropout.view(1, 1, C, 1))
            weight, bias = params[2 * layer], params[2 * layer + 1]
            # Later layers are per model: (G, C, B, H) @ (G, C, H, H') as one batched matmul.
            h = torch.matmul(h.transpose(1, 2), weight).transpose(1, 2) + bias.view(G, 1, C, -1)
        return h

    def state(self, extra: dict) -> dict:
        """A checkpoint of plain tensors and values (``torch.load(weights_only=True)`` safe)."""
        return {"format": "pipeline.stacked/1", "theta": self.theta.detach().cpu(),
                "arch": vars(self.arch), "groups": self.groups, "hidden": [list(h) for h in self.hidden],
                "dropout": self.dropout.cpu().tolist(), **extra}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> "StackedRegressor":
        model = cls(Architecture(**state["arch"]), state["groups"], [tuple(h) for h in state["hidden"]],
                    state["dropout"], device)
        if model.theta.shape != state["theta"].shape:
            raise ValueError("parameter count does not match the architecture")
        model.theta = state["theta"].to(device)
        return model
