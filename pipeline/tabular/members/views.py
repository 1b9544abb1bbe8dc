"""A member on the numbers without their quantile splines (``splines = false`` in its table):
the same family on a second view of the columns, the scaled numbers and one-hot categories only
(the dense columns before the splines; trees read the native ones and have no such view).

Why: the splines let a linear model bend and help the MLP on most tables, but an MLP on the
plain numbers errs differently, and a blend gains from that. As the ``best`` recipe's sixth
member, at 10 minutes, scored on held-out rows (benchmarks/autogluon.py): benefits'
five 80/20 splits 0.6650 -> 0.6672 (higher on each), computers 0.068252 -> 0.068252 (no
weight), hotel 0.1421 -> 0.1422, strikes 0.9230 -> 0.9229. Alone it is the better MLP on strikes
(CV 0.8973 against 0.8942) and far worse on computers and hotel (RMSLE 0.0958 against 0.0775,
0.1625 against 0.1437), where ensemble selection leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from pipeline.constraints import FLAG, checked
from pipeline.metrics import Metric
from pipeline.tabular.members.base import FAMILIES, Fitted, Inputs, Job, Member

PARAM = "splines"  # a member table's key: false for this view
SUFFIX = " (no splines)"  # after the inner member's label


@dataclass(frozen=True)
class WithoutSplines(Member):
    """``inner``, fit and predicting on the dense columns before the splines."""

    inner: Member

    @property
    def family(self) -> str:
        return self.inner.family

    @property
    def label(self) -> str:
        return self.inner.label + SUFFIX

    def _fit(self, job: Job) -> "NarrowFitted":
        width = job.data.features.plain_width
        return NarrowFitted(self.inner._fit(replace(job, data=job.data.narrowed(width))), width)

    @classmethod
    def declared(cls, family: str) -> dict:
        """``family``'s params, and this view's switch where it reads the dense columns (true:
        the splines too, the member as it is)."""
        params = FAMILIES[family].declared(family)
        return params if FAMILIES[family].native else {**params, PARAM: True}

    @classmethod
    def build(cls, family: str, values: dict) -> "Member":
        """A member of ``family``, in this view where its table says ``splines = false`` (a tree
        family refuses the switch as a param it does not take)."""
        if FAMILIES[family].native:
            return FAMILIES[family].build(family, values)
        member = FAMILIES[family].build(family, {k: v for k, v in values.items() if k != PARAM})
        return member if checked(PARAM, values.get(PARAM, True), FLAG) else cls(member)

    def params(self) -> dict:
        return {**self.inner.params(), PARAM: False}

    def used_params(self, task) -> dict:
        """The inner member's, as its family names them, and the switch: a recipe that rebuilds it."""
        return {**self.inner.used_params(task), PARAM: False}

    def restore(self, state: dict, metric: Metric, device: torch.device) -> "NarrowFitted":
        return NarrowFitted(self.inner.restore(state, metric, device), state["plain_width"])

    def missing(self) -> str | None:
        return self.inner.missing()

    def supports(self, task) -> bool:
        return self.inner.supports(task)


class NarrowFitted(Fitted):
    """A fitted member that reads the first ``width`` dense columns of whatever it predicts."""

    def __init__(self, inner: Fitted, width: int):
        self.inner, self.width = inner, width
        self.label, self.report = inner.label + SUFFIX, inner.report

    def predict(self, inputs: Inputs, rows: list[torch.Tensor] | None = None) -> torch.Tensor:
        return self.inner.predict(inputs.narrowed(self.width), rows)

    def state(self) -> dict:
        state = self.inner.state()
        return {**state, "params": {**state["params"], PARAM: False}, "plain_width": self.width}
