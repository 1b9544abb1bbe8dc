"""Blends of recipe members: their predictions averaged in the metric's space.

For a log metric the space is the log of the predictions, so the blend is a geometric mean;
class probabilities are averaged as they are.
"""

from __future__ import annotations

import torch

from pipeline.metrics import Metric


def blend(predictions: list[torch.Tensor], metric: Metric, weights: list[float] | None = None) -> torch.Tensor:
    """The weighted mean of ``predictions`` (each (..., rows, outputs)) in ``metric``'s space;
    equal weights by default."""
    weights = weights or [1.0 / len(predictions)] * len(predictions)
    return metric.unspace(sum(w * metric.space(p) for w, p in zip(weights, predictions)))


def average(predictions: torch.Tensor, metric: Metric, dim: int) -> torch.Tensor:
    """The mean over ``dim`` (a member's seeds) in ``metric``'s space."""
    return blend(list(predictions.unbind(dim)), metric)
