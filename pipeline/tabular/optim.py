"""Adam for a stacked model's one flat parameter tensor.

torch's fused Adam/AdamW kernel where all models share a learning rate and weight decay (a CV),
else an Adam written out here with one rate and decay per config (a sweep), which torch.optim,
with one per tensor, lacks.
"""

from __future__ import annotations

import math

import torch

from pipeline.tabular.stacked import StackedModel

OPTIMIZERS = ("adam", "adamw")  # adamw: decoupled weight decay
BETAS, EPS = (0.9, 0.999), 1e-8


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


def make_optimizer(model: StackedModel, configs: list, total_steps: int) -> _Adam | _FusedAdam:
    """The fused kernel when every config has the same lr and weight decay, else the per-config Adam."""
    lrs, decays = [c.lr for c in configs], [c.weight_decay for c in configs]
    decoupled = configs[0].optimizer == "adamw"
    if len(set(lrs)) == 1 and len(set(decays)) == 1 and hasattr(torch, "_fused_adamw_"):  # a private op
        return _FusedAdam(model.theta, lrs[0], decays[0], decoupled, total_steps)
    return _Adam(model.theta, model.per_element(lrs), model.per_element(decays) if any(decays) else None, decoupled)
