"""Blends of recipe members: predictions averaged in the metric's space, with weights.

For a log metric the space is the log of the predictions, so a blend is a weighted geometric
mean; class probabilities are averaged as they are. ``mean`` weighs every member equally;
``greedy`` is Caruana et al.'s ensemble selection (as in AutoGluon): starting from nothing, add
with replacement the member that most improves the blend's score on out-of-fold predictions;
the weights are how often each was added.
"""

from __future__ import annotations

import torch

from pipeline.errors import ParamError
from pipeline.metrics import Metric

BLENDS = ("mean", "greedy")
ROUNDS = 40  # greedy additions: weights in steps of 1/40


def blend(predictions: list[torch.Tensor], metric: Metric, weights: list[float] | None = None) -> torch.Tensor:
    """The weighted mean of ``predictions`` (each (..., rows, outputs)) in ``metric``'s space;
    equal weights by default."""
    weights = weights or [1.0 / len(predictions)] * len(predictions)
    return metric.unspace(sum(w * metric.space(p) for w, p in zip(weights, predictions) if w))


def _scores(candidates: torch.Tensor, y: torch.Tensor, metric: Metric) -> torch.Tensor:
    """The metric of each (rows, outputs) candidate in ``candidates`` (M, rows, outputs), given in space."""
    return metric.score(metric.task.scored(metric.unspace(candidates)), y)


def greedy_weights(predictions: torch.Tensor, y: torch.Tensor, metric: Metric, rounds: int = ROUNDS) -> list[float]:
    """Ensemble selection on ``predictions`` (M, rows, outputs) of M members for labels ``y``."""
    spaces = metric.space(predictions)
    total = torch.zeros_like(spaces[0])
    counts = [0] * len(spaces)
    for added in range(1, rounds + 1):
        scores = _scores((total + spaces) / added, y, metric)
        pick = int(scores.argmax() if metric.higher_is_better else scores.argmin())
        counts[pick] += 1
        total += spaces[pick]
    return [count / rounds for count in counts]


def fit_weights(how: str, predictions: torch.Tensor, y: torch.Tensor, metric: Metric) -> list[float]:
    """Blend weights for M members' out-of-fold ``predictions`` (M, rows, outputs) of labels ``y``."""
    if how not in BLENDS:
        raise ParamError("blend", how, f"not one of {', '.join(BLENDS)}")
    if how == "mean" or len(predictions) == 1:
        return [1.0 / len(predictions)] * len(predictions)
    return greedy_weights(predictions, y, metric)
