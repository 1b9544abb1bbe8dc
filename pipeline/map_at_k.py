"""MAP@3, the worked example of a metric in a module of its own (registered by one import line
at the bottom of :mod:`pipeline.metrics`).

Recommendation-style competitions score each row's three most probable classes, best first:
1/rank of the true class among them, 0 when it is absent, averaged over rows (higher is
better). The submission is those three classes of each id as three rows ``id,label``.
"""

from __future__ import annotations

import torch

from pipeline.metrics import Metric, Ranked, register
from pipeline.tasks import TASKS

K = 3


def _precision_at_hit(prob: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's 1/rank of its label among its ``K`` most probable classes (all of them when
    fewer), else 0: ``prob`` (..., rows, classes), ``labels`` broadcasting against (..., rows)."""
    best = prob.topk(min(K, prob.shape[-1]), -1).indices
    hits = (best == labels.unsqueeze(-1)).to(prob.dtype)
    return (hits / torch.arange(1, best.shape[-1] + 1, dtype=prob.dtype, device=prob.device)).sum(-1)


register(Metric(f"map@{K}", TASKS["classification"], True, Ranked(K), _precision_at_hit))
