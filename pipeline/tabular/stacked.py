"""Tabular torch models as one stacked tensor program: G row groups (folds) x C configs at once.

A stacked model holds the parameters of G*C independent linear or MLP models in ONE flat
tensor. Every config of a group sees that group's rows, so the first layer is a single batched
matmul of the group's batch with the (G, C*H, d + 1) weights and biases of all its configs; the
configs may differ in learning rate, weight decay, dropout and hidden width (narrower ones are
zero-padded to the widest, and the padding stays exactly zero, see ``DERIVATIVES``). torch.func.vmap over
module copies would give the same maths with one kernel per config and layer; stacking is what
makes a 240-model sweep one matmul per layer.

Activations are unit-major, (models, units, rows), and weights are stored (out, in) as
nn.Linear stores them: every product then has the many-row operand on the right, which is
the orientation in which CPU BLAS is fast for the narrow outputs of linear models (5-10x
faster than (rows, d) @ (d, 1) here), and no operand needs a transposed copy.

The backward pass is written out (``backward_block``) rather than taken from autograd: a
training step of the d2l linear model is 7 small kernels, and autograd's graph bookkeeping
per op cost more than the arithmetic; the derivatives are the textbook ones of a linear layer,
the activation (``DERIVATIVES``) and the loss (in the trainer), for every activation here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from pipeline.errors import ParamError

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "silu": F.silu, "elu": F.elu}


def _silu_slope(z, a):
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


# d act(z) / dz from the pre-activation z and the output a. Every activation above maps 0 to 0
# with a finite slope there, so padded units (zero weights in and out) get exactly zero outputs
# and gradients, and their parameters stay zero under Adam and weight decay without a mask.
DERIVATIVES = {
    "relu": lambda z, a: z > 0,
    "gelu": lambda z, a: torch.special.ndtr(z) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi),
    "tanh": lambda z, a: 1 - a * a,
    "silu": _silu_slope,
    "elu": lambda z, a: torch.where(z > 0, 1.0, a + 1),
}
MODELS = ("linear", "mlp")


def widths_of(model: str, hidden: tuple[int, ...]) -> tuple[int, ...]:
    """The hidden layers' widths of a ``model`` given ``hidden``: a linear model has none."""
    return tuple(hidden) if model == "mlp" else ()


def check_widths(model: str, hidden: tuple[int, ...]) -> None:
    if model == "mlp" and not (hidden and min(hidden) >= 1):
        raise ParamError("hidden", list(hidden), "an mlp needs widths >= 1")
# One generator for all columns; or per column, one generator for its initial weights and one
# per hidden layer for its dropout masks; None: no dropout, and default initialisation.
Randomness = Union[torch.Generator, Sequence[Sequence[torch.Generator]], None]
ACTIVATION_BUDGET = 1 << 22  # elements of one layer's activations computed at once: bounds memory in wide sweeps


@dataclass(frozen=True)
class Architecture:
    """What the configs of one stacked model share; widths and dropout may differ per config."""

    model: str  # linear | mlp
    depth: int  # hidden layers: 0 for linear
    activation: str
    n_in: int
    n_out: int

    def __post_init__(self):
        if self.model not in MODELS:
            raise ParamError("model", self.model, f"not one of {', '.join(MODELS)}")
        if self.activation not in ACTIVATIONS:
            raise ParamError("activation", self.activation, f"not one of {', '.join(ACTIVATIONS)}")


@dataclass
class Block:
    """Models computed together: ``groups`` x ``configs``, a contiguous range of theta.

    ``weights[0]`` is (Gb, Cb*H, d + 1), one product per group shared by its configs, with the
    bias as its last column (``biases[0]`` views it); later weights are (Gb*Cb, out, in), one
    product per model; ``biases`` are (..., out, 1).
    """

    groups: slice
    configs: slice
    weights: list[torch.Tensor]
    biases: list[torch.Tensor]


class StackedModel:
    """Parameters of ``groups`` x ``len(hidden)`` models in one flat tensor ``theta``.

    ``hidden[c]`` is config c's tuple of hidden widths (empty for linear); ``dropout[c]`` its
    dropout rate. Layer l's weights are stored (G, C, fan_out, fan_in), padded to the widest
    config, so that an optimizer step over all models is a few element-wise ops on one tensor
    and a (group, config) range of models is a contiguous slice. The first layer's bias is
    stored as a last input column, (G, C, H, d + 1): inputs with a ones column then get weight
    and bias gradients from one product. :meth:`views` shows the tensors in the (G, d, C, H) /
    (G, C, fan_in, fan_out) shapes of the math.
    """

    # /3 held the target's standardization (now the member's target transform); /2 named the
    # architecture's model "kind"; /1 stored (fan_in, fan_out) weights
    FORMAT = "pipeline.stacked/4"

    def __init__(self, arch: Architecture, groups: int, hidden: list[tuple[int, ...]],
                 dropout: list[float], device: torch.device, generator: Randomness = None):
        self.arch, self.groups, self.configs, self.device = arch, groups, len(hidden), device
        self.hidden = [tuple(h) for h in hidden]
        widths = [max(h[layer] for h in self.hidden) for layer in range(arch.depth)]
        self.sizes = [arch.n_in, *widths, arch.n_out]
        G, C = groups, self.configs
        # storage shapes: [W0 | b0], W1, b1, W2, ...; the config axis is 1
        self.shapes: list[tuple[int, ...]] = [(G, C, self.sizes[1], arch.n_in + 1)]
        for fan_in, fan_out in zip(self.sizes[1:-1], self.sizes[2:]):
            self.shapes += [(G, C, fan_out, fan_in), (G, C, fan_out)]
        self.theta = torch.zeros(sum(math.prod(s) for s in self.shapes), device=device)
        self.dropout = torch.tensor(dropout, device=device, dtype=torch.float32)
        self.use_dropout = any(p > 0 for p in dropout)
        self._init(generator)

    def _stored(self, theta: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The tensors in their storage shapes, as views into ``theta``."""
        theta = self.theta if theta is None else theta
        return [part.view(shape) for part, shape in zip(theta.split([math.prod(s) for s in self.shapes]), self.shapes)]

    def views(self, theta: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The weight and bias tensors as views into ``theta`` (alternating W, b per layer):
        W0 (G, d, C, H0), later W (G, C, fan_in, fan_out), b (G, C, fan_out)."""
        first, *rest = self._stored(theta)
        out = [first[..., :-1].permute(0, 3, 1, 2), first[..., -1]]
        for weight, bias in zip(rest[::2], rest[1::2]):
            out += [weight.transpose(2, 3), bias]
        return out

    def _init(self, generator: Randomness):
        """nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases,
        with fan_in the config's own width; padded units stay zero. ``generator`` is one for
        all columns, or per column (its first: a config then starts the same in any stack)."""
        params = self.views()
        for layer in range(len(self.sizes) - 1):
            weight, bias = params[2 * layer], params[2 * layer + 1]
            for c, widths in enumerate(self.hidden):
                column_generator = generator[c][0] if isinstance(generator, (list, tuple)) else generator
                fan_in = self.arch.n_in if layer == 0 else widths[layer - 1]
                fan_out = self.arch.n_out if layer == self.arch.depth else widths[layer]
                bound = 1.0 / math.sqrt(fan_in)
                config_weight = weight[:, :, c] if layer == 0 else weight[:, c]
                for tensor in (config_weight[:, :fan_in, :fan_out], bias[:, c, :fan_out]):
                    values = torch.rand(tensor.shape, generator=column_generator, device=self.device)
                    tensor.copy_(values.mul_(2 * bound).sub_(bound))

    def per_element(self, values: list[float]) -> torch.Tensor:
        """Spread one value per config over every element of ``theta`` (for per-config lr, wd)."""
        column = torch.tensor(values, device=self.device, dtype=torch.float32)
        return torch.cat([column.view(1, -1, *[1] * (len(s) - 2)).expand(s).reshape(-1) for s in self.shapes])

    def per_model(self, values: torch.Tensor) -> torch.Tensor:
        """Spread one value per (group, config) model, (G, C), over every element of ``theta``."""
        G, C = self.groups, self.configs
        return torch.cat([values.view(G, C, *[1] * (len(s) - 2)).expand(s).reshape(-1) for s in self.shapes])

    def blocks(self, rows: int, theta: torch.Tensor | None = None) -> list[Block]:
        """Split the models so that one layer's activations for ``rows`` rows stay within
        ACTIVATION_BUDGET: runs of whole groups, or runs of one group's configs."""
        G, C = self.groups, self.configs
        models = max(1, ACTIVATION_BUDGET // (rows * max(self.sizes[1:])))
        if models >= C:
            ranges = [(slice(g, min(g + models // C, G)), slice(0, C)) for g in range(0, G, models // C)]
        else:
            ranges = [(slice(g, g + 1), slice(c, min(c + models, C))) for g in range(G) for c in range(0, C, models)]
        first, *rest = self._stored(theta)
        out = []
        for groups, configs in ranges:
            Gb, Cb = groups.stop - groups.start, configs.stop - configs.start
            weights = [first[groups, configs].view(Gb, -1, first.shape[-1])]
            biases = [weights[0][..., -1:]]
            for w, b in zip(rest[::2], rest[1::2]):
                weights.append(w[groups, configs].view(Gb * Cb, w.shape[2], -1))
                biases.append(b[groups, configs].view(Gb * Cb, -1, 1))
            out.append(Block(groups, configs, weights, biases))
        return out

    def first_layer(self, block: Block, xT: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """The first layer's pre-activations (Gb, Cb * H, rows) for inputs ``xT``: (Gb, d, rows),
        or (d, rows) shared by all groups; with d + 1 rows, the last all ones, the bias rides in
        the product. ``extra`` (Gb, k, rows): each group's own further inputs (the in-fold
        columns), whose weights follow the shared inputs'; ``xT`` then has no ones row."""
        Gb, rows, d = block.weights[0].shape[0], xT.shape[-1], xT.shape[-2]
        weight = block.weights[0]
        plain = d + (0 if extra is None else extra.shape[-2]) < weight.shape[-1]
        if plain:
            weight = weight[..., :-1]
        shared = weight if extra is None else weight[..., :d]
        if xT.dim() == 2:  # inputs shared by all groups: one product for all of them
            z = torch.mm(shared.reshape(-1, d), xT).view(Gb, -1, rows)
        else:
            z = torch.bmm(shared, xT)
        if extra is not None:
            z.baddbmm_(weight[..., d:], extra)
        return z.add_(block.biases[0]) if plain else z

    def forward_block(self, block: Block, xT: torch.Tensor, generator: Randomness = None,
                      extra: torch.Tensor | None = None):
        """Outputs (Gb, Cb, n_out, rows) of a block's models for inputs ``xT`` (and ``extra``,
        see :meth:`first_layer`). Dropout applies when a generator is given. Also returns, per
        hidden layer, what :meth:`backward_block` needs."""
        Gb, Cb = block.weights[0].shape[0], block.configs.stop - block.configs.start
        act = ACTIVATIONS[self.arch.activation]
        rows = xT.shape[-1]
        z = self.first_layer(block, xT, extra)
        saved = []
        for layer, (weight, bias) in enumerate(zip(block.weights[1:], block.biases[1:]), 1):
            z = z.view(Gb * Cb, -1, rows)
            a = act(z)
            keep = None
            if generator is not None and self.use_dropout:
                rate = self.dropout[block.configs].view(1, -1, 1, 1)
                if isinstance(generator, (list, tuple)):
                    # each column's masks from its own generator for this layer, at its own width:
                    # the numbers a config draws do not depend on the blocks or on the widths of
                    # the configs it is stacked with (padded units are zero whatever their mask)
                    draw = torch.ones((Gb, Cb, z.shape[1], rows), device=z.device)
                    for i, c in enumerate(range(block.configs.start, block.configs.stop)):
                        width = self.hidden[c][layer - 1]
                        draw[:, i, :width] = torch.rand((Gb, width, rows), generator=generator[c][layer],
                                                        device=z.device)
                else:
                    draw = torch.rand((Gb, Cb, z.shape[1], rows), generator=generator, device=z.device)
                keep = ((draw >= rate) / (1 - rate)).view_as(z)  # inverted dropout, as nn.Dropout
            inputs = a if keep is None else a * keep
            saved.append((z, a, keep, inputs))
            z = torch.baddbmm(bias, weight, inputs)
        return z.view(Gb, Cb, -1, rows), saved

    def backward_block(self, block: Block, grads: Block, x: torch.Tensor, saved: list, dout: torch.Tensor) -> None:
        """Write d loss / d parameters of a block into ``grads`` (the same block of a gradient
        buffer), given ``dout`` = d loss / d outputs (Gb, Cb, n_out, rows) and the batch
        ``x`` (Gb, rows, d + 1), ones in the last column, that :meth:`forward_block` saw."""
        Gb, rows = x.shape[0], x.shape[1]
        slope = DERIVATIVES[self.arch.activation]
        dz = dout.view(-1, dout.shape[2], rows) if self.arch.depth else dout
        for layer in range(self.arch.depth, 0, -1):
            z, a, keep, inputs = saved[layer - 1]
            torch.bmm(dz, inputs.transpose(1, 2), out=grads.weights[layer])
            torch.sum(dz, -1, keepdim=True, out=grads.biases[layer])
            da = torch.bmm(block.weights[layer].transpose(1, 2), dz)
            if keep is not None:
                da.mul_(keep)
            dz = da.mul_(slope(z, a))
        torch.bmm(dz.view(Gb, -1, rows), x, out=grads.weights[0])  # the ones column gives the bias's

    def forward(self, x: torch.Tensor, theta: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None, extra: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (G or 1, B, d), or d + 1 with a ones column last, and each group's ``extra``
        inputs (G, B, k) -> raw outputs (G, B, C, n_out) (the target transform takes them to the
        labels' scale). Dropout applies when a generator is given."""
        rows = x.shape[1]
        out = torch.empty(self.groups, rows, self.configs, self.arch.n_out, device=x.device)
        shared = x[0].T if x.shape[0] == 1 else None  # 2-D, so that matmul makes one product of all groups
        for block in self.blocks(rows, theta):
            xT = shared if shared is not None else x[block.groups].transpose(1, 2)
            own = None if extra is None else extra[block.groups].transpose(1, 2)
            y, _ = self.forward_block(block, xT, generator, own)
            out[block.groups, :, block.configs] = y.permute(0, 3, 1, 2)
        return out

    @classmethod
    def concat(cls, models: list["StackedModel"]) -> "StackedModel":
        """Models of the same configs trained on different groups, as one model of all the groups."""
        first = models[0]
        out = cls(first.arch, sum(m.groups for m in models), first.hidden, first.dropout.tolist(), first.device,
                  torch.Generator(first.device))  # its own draws, overwritten: the caller's RNG stays as it was
        for stored, *parts in zip(out._stored(), *(m._stored() for m in models)):
            torch.cat(parts, out=stored)
        return out

    def state(self, extra: dict) -> dict:
        """A checkpoint of plain tensors and values (``torch.load(weights_only=True)`` safe)."""
        return {"format": self.FORMAT, "theta": self.theta.detach().cpu(),
                "arch": vars(self.arch), "groups": self.groups, "hidden": [list(h) for h in self.hidden],
                "dropout": self.dropout.cpu().tolist(), **extra}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> "StackedModel":
        if state.get("format") != cls.FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r} is not {cls.FORMAT!r}; retrain the model")
        model = cls(Architecture(**state["arch"]), state["groups"], [tuple(h) for h in state["hidden"]],
                    state["dropout"], device)
        if model.theta.shape != state["theta"].shape:
            raise ValueError("parameter count does not match the architecture")
        model.theta = state["theta"].to(device)
        return model
