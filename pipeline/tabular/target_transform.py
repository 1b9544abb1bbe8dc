"""The target transform: how a member learns the labels, decided once, saved with it, and
inverted in one place (:meth:`TargetTransform.inverse`).

A regressor learns in the metric's log space (log1p for rmsle, else log) when ``log_target``
says so and the labels allow it, optionally standardized per row set (each fold's own mean and
spread, so that no label outside its rows is used), and its predictions are kept inside the
range of the targets it learned from: clipped there, one exp of an extrapolating network cannot
explode (the MLP's RMSE on diamonds' prices: 437,567 unclipped, 587 clipped). A classifier's
transform is the identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pipeline.metrics import Metric


@dataclass
class TargetTransform:
    """``log``: learn ``metric.log[0](y)``; per row set g, learned values are
    ``(learned - shift[g]) / scale[g]`` and predictions are clipped to ``[low[g], high[g]]``
    (infinite bounds: not clipped)."""

    metric: Metric
    log: bool = False
    shift: torch.Tensor | None = None  # (G,) float64
    scale: torch.Tensor | None = None
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None
    standardized: bool = False

    @classmethod
    def choose(cls, metric: Metric, log_target: bool | str, labels: torch.Tensor) -> "TargetTransform":
        """The transform a member with ``log_target`` learns these labels in (not yet fit)."""
        return cls(metric, metric.task.learns_in_log(log_target, metric, labels))

    def learned(self, y):
        """Labels (a tensor of any float dtype) in the space the member learns them."""
        return self.metric.log[0](y) if self.log else y

    def fit(self, learned: torch.Tensor, rows: list[torch.Tensor], standardize: bool = False,
            clip: bool = False) -> "TargetTransform":
        """Per row set: the mean and spread of its ``learned`` targets (``standardize``), and
        their range (``clip``); only values are scaled, never class probabilities."""
        standardize, clip = (flag and self.metric.task.continuous for flag in (standardize, clip))
        self.standardized = standardize

        def stat(value, default):
            return torch.tensor([value(learned[r]) if value else default for r in rows], dtype=torch.float64)

        self.shift = stat(standardize and (lambda t: t.mean()), 0.0)
        self.scale = stat(standardize and (lambda t: t.std(correction=0).clamp_min(1e-12)), 1.0)
        self.low = stat(clip and (lambda t: t.min()), -math.inf)
        self.high = stat(clip and (lambda t: t.max()), math.inf)
        return self

    def inverse(self, values: torch.Tensor, group_dim: int = 0) -> torch.Tensor:
        """Learned-space predictions back in the labels' scale, in place; ``values``' row-set
        axis is ``group_dim``."""
        shape = [1] * values.dim()
        shape[group_dim] = len(self.shift)

        def per_group(stat: torch.Tensor) -> torch.Tensor:
            return stat.to(values.device, values.dtype).view(shape)

        values.mul_(per_group(self.scale)).add_(per_group(self.shift))
        values.clamp_(per_group(self.low), per_group(self.high))
        return self.metric.log[1](values) if self.log else values

    @classmethod
    def concat(cls, transforms: list["TargetTransform"]) -> "TargetTransform":
        """The transforms of several row sets as one."""
        first = transforms[0]
        stats = {name: torch.cat([getattr(t, name) for t in transforms]) for name in ("shift", "scale", "low", "high")}
        return cls(first.metric, first.log, standardized=first.standardized, **stats)

    def state(self) -> dict:
        return {"log": self.log, "shift": self.shift, "scale": self.scale, "low": self.low, "high": self.high,
                "standardized": self.standardized}

    @classmethod
    def from_state(cls, state: dict, metric: Metric) -> "TargetTransform":
        return cls(metric, bool(state["log"]), state["shift"], state["scale"], state["low"], state["high"],
                   bool(state["standardized"]))
