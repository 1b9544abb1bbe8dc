"""A second level of members, stacked on the first level's predictions (as AutoGluon stacks):
each level-1 member's prediction of a row becomes columns that a level-2 member takes after the
row's own features.

In the CV the level-2 members train on the same outer folds, and nothing they learn from was
made with the scored fold's labels. Fold k's validation rows take the level-1 out-of-fold
predictions (made by fold k's level-1 models, which never saw them); its training rows take the
predictions of level-1 models fit again inside them (:data:`pipeline.tabular.cv.INNER_FOLDS`).
The plain way, every row's out-of-fold prediction as its column, is not honest: fold j's columns
come from models that trained on fold k, and a level-2 model that also takes the features reads
fold k's labels back out of them. On benefits with its labels shuffled (coin flips) a linear
level-2 model scored AUC 0.57-0.59 that way, and 0.49-0.51 nested (tests/test_stacking.py).
For the submission, the training rows take their out-of-fold columns and the test rows those
of the level-1 members fit on every row.

The columns are the predictions in the metric's space (log prices for RMSLE, one column of a
binary classifier's probabilities), standardized on the out-of-fold rows, as
:mod:`pipeline.tabular.infold`'s are, so that every family takes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.metrics import Metric


@dataclass
class StackedColumns:
    """How M level-1 members' (rows, outputs) predictions become a level-2 member's columns."""

    mean: torch.Tensor  # (k,) over the out-of-fold rows
    std: torch.Tensor

    @classmethod
    def fit(cls, oof: torch.Tensor, metric: Metric) -> "StackedColumns":
        """Scaled to the out-of-fold predictions ``oof`` (M, rows, outputs) of every validated row."""
        values = _raw(oof, metric)
        values = values[~values.isnan().any(1)]
        return cls(values.mean(0), values.std(0).clamp_min(1e-6))

    def columns(self, predictions: torch.Tensor, metric: Metric) -> torch.Tensor:
        """(rows, k) level-2 columns of M members' (M, rows, outputs) ``predictions``."""
        return ((_raw(predictions, metric) - self.mean.to(predictions.device)) /
                self.std.to(predictions.device)).float()

    def state(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: dict) -> "StackedColumns":
        return cls(state["mean"], state["std"])


def _raw(predictions: torch.Tensor, metric: Metric) -> torch.Tensor:
    """(rows, k): each member's predictions in the metric's space, the column the others
    determine dropped (:meth:`pipeline.tasks.Task.compact`)."""
    spaced = metric.space(predictions.double())
    return torch.cat([torch.from_numpy(metric.task.compact(p.cpu().numpy())).to(predictions.device)
                      for p in spaced], 1)


def with_columns(extra: torch.Tensor | None, columns: torch.Tensor, groups: int) -> torch.Tensor:
    """Each of ``groups`` row sets' in-fold columns (G, rows, j), or none, followed by the same
    level-2 ``columns`` (rows, k): (G, rows, j + k)."""
    stacked = columns.to(torch.float32).unsqueeze(0).expand(groups, -1, -1)
    return stacked if extra is None else torch.cat([extra.to(stacked.device, torch.float32), stacked], 2)
