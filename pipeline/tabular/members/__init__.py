"""Recipe members: every model family behind one protocol (:mod:`.base`): the stacked torch
models (:mod:`.neural`), and on the template of one library model per row set
(:mod:`.library`) scikit-learn's estimators (:mod:`.scikit`) and LightGBM (:mod:`.boosting`).

A family declares its params with their defaults and constraints next to its code; a recipe's
member table (``{model = "mlp", dropout = 0.2}``) names its family and overrides them. A new
family is one file whose last line registers it (:func:`~.base.register`), and one import
line here. A member of a family that reads the dense columns takes them without the numbers'
quantile splines where its table says ``splines = false`` (:mod:`.views`).
"""

from __future__ import annotations

import torch

from pipeline.errors import ParamError
from pipeline.metrics import Metric
from pipeline.tabular.members.base import FAMILIES, FitReport, Fitted, Inputs, Member, TrainingSet, score_groups
from pipeline.tabular.members.neural import TorchMember
from pipeline.tabular.members.boosting import LightGBMMember
from pipeline.tabular.members.scikit import SklearnMember
from pipeline.tabular.members import extra_trees  # noqa: F401  (registers extratrees)
from pipeline.tabular.members import catboost  # noqa: F401  (registers catboost)
from pipeline.tabular.members.views import WithoutSplines


def declared(family: str) -> dict:
    """The params of ``family`` and their defaults (with ``splines`` where it reads the dense columns)."""
    return WithoutSplines.declared(family)


def every_param() -> set[str]:
    """Every param any family declares."""
    return {key for family in FAMILIES for key in declared(family)}


def build(family: str, values: dict) -> Member:
    """A member of ``family`` with ``values`` over its defaults; a bad value is a one-line error."""
    if family not in FAMILIES:
        raise ParamError("model", family, f"not one of {', '.join(FAMILIES)}")
    return WithoutSplines.build(family, values)


def load_fitted(state: dict, metric: Metric, device: torch.device) -> Fitted:
    """A fitted member from its :meth:`Fitted.state`: its family rebuilt from its params; an
    unknown or damaged state raises KeyError, TypeError or ValueError (the checkpoint reader
    turns them into one line)."""
    return build(state["family"], state["params"]).restore(state, metric, device)


__all__ = ["FAMILIES", "FitReport", "Fitted", "Inputs", "Member", "TrainingSet", "build", "declared",
           "every_param", "load_fitted", "score_groups", "LightGBMMember", "SklearnMember",
           "TorchMember", "WithoutSplines"]
