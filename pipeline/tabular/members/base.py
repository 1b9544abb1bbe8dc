"""The member protocol: every model family behind one small interface.

``member.fit(data, rows)`` trains one model per row set (each fold's training rows, or every
row for the submission) and returns a :class:`Fitted` that predicts and saves itself; its fit's
results (time, divergence, the training length it chose, its curves) come with it, as a
:class:`FitReport`. Cross-validation, the final fit, the blend and the checkpoint only ever call
that protocol.

A member that picks its own training length (the best epoch or boosting round on an inner
split of its rows) reports it as ``FitReport.budget``; the final fit on every row is given the
mean of the folds' budgets, so no row is held out of the model that is submitted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import copy
import time
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import torch

from pipeline.metrics import Metric
from pipeline.progress import Progress
from pipeline.tabular.budget import OutOfTime
from pipeline.tabular.features import Features


@dataclass
class Inputs:
    """Rows as each family wants them: ``dense`` (scaled numbers and one-hot categories) for
    torch and linear models, ``native`` (raw numbers, category codes, NaN) for trees, whose
    columns ``categorical`` are categories, and ``extra`` (G, rows, k): each row set's own
    in-fold columns (:mod:`pipeline.tabular.infold`), which every family takes after the others."""

    dense: torch.Tensor
    native: torch.Tensor | None = None
    categorical: list[int] = field(default_factory=list)
    extra: torch.Tensor | None = None

    def dense_of(self, group: int) -> np.ndarray:
        """Row set ``group``'s dense columns and its in-fold ones, for scikit-learn."""
        return self._with_extra(self.dense.cpu().numpy(), group)

    def native_of(self, group: int) -> np.ndarray:
        """Row set ``group``'s native columns and its in-fold ones, for trees."""
        return self._with_extra(self.native.cpu().numpy(), group)

    def _with_extra(self, values: np.ndarray, group: int) -> np.ndarray:
        if self.extra is None:
            return values
        return np.concatenate([values, self.extra[group].cpu().numpy().astype(values.dtype)], axis=1)

    def __len__(self) -> int:
        return len(self.dense)

    def narrowed(self, width: int) -> "Inputs":
        """These rows with only their first ``width`` dense columns."""
        return replace(self, dense=self.dense[:, :width].contiguous())

    @property
    def device(self) -> torch.device:
        return self.dense.device


class TrainingSet:
    """A competition's features on the training device: the training rows' inputs and labels,
    the test rows' inputs, the metric and its task, and the model outputs they need."""

    def __init__(self, features: Features, device: torch.device, extra: torch.Tensor | None = None,
                 test_extra: torch.Tensor | None = None):
        self.features, self.device = features, device
        self.X, self.y = features.X.to(device), features.y.to(device)
        self.extra = None if extra is None else extra.to(device)
        self.train = Inputs(self.X, features.native, features.native_categorical, self.extra)
        self.test = Inputs(features.X_test.to(device), features.native_test, features.native_categorical,
                           None if test_extra is None else test_extra.to(device))
        self.metric: Metric = features.spec.scorer
        self.task = self.metric.task
        self.n_out = self.task.outputs(features.classes)

    @cached_property
    def labels(self) -> np.ndarray:
        return self.features.y.numpy()

    def narrowed(self, width: int) -> "TrainingSet":
        """The same rows with only their first ``width`` dense columns (see :mod:`.views`)."""
        view = copy.copy(self)
        view.train, view.test = self.train.narrowed(width), self.test.narrowed(width)
        view.X = view.train.dense
        return view


@dataclass
class FitReport:
    """How a fit went, per row set: ``failed_epoch`` the first epoch with a non-finite loss (0
    if none), ``budget`` the epochs or boosting rounds it chose (mean over its row sets),
    ``curves`` per-epoch (epochs, G) train and valid metric for members trained in epochs."""

    seconds: float
    failed_epoch: np.ndarray
    budget: float | None = None
    curves: tuple[np.ndarray, np.ndarray | None] | None = None
    shortened: str = ""  # how a time limit cut its training short ("3 of 30 epochs"), if it did


@dataclass
class Job:
    """One call of :meth:`Member.fit`: its row sets and how to train them."""

    data: TrainingSet
    rows: list[torch.Tensor]
    valid_rows: list[torch.Tensor] | None = None
    seeds: int = 1
    seed: int = 0
    progress: Progress = field(default_factory=Progress)
    budget: float | None = None
    deadline: float | None = None


class Member(ABC):
    """A model family's member of a recipe, with its params (see :mod:`pipeline.tabular.members`).

    :meth:`fit` is the template every family shares (the deadline, the clock); a family writes
    :meth:`_fit`, declares its params (:meth:`declared`), builds a member from them
    (:meth:`build`) and rebuilds a fitted one from its state (:meth:`restore`)."""

    family: str
    native = False  # it reads the native columns (trees), not the dense ones

    @property
    def label(self) -> str:
        return self.family

    def fit(self, data: TrainingSet, rows: list[torch.Tensor], *, valid_rows: list[torch.Tensor] | None = None,
            seeds: int = 1, seed: int = 0, progress: Progress = Progress(), budget: float | None = None,
            deadline: float | None = None) -> "Fitted":
        """One model per row set in ``rows`` (``seeds`` of them each, averaged); a ``budget``
        fixes the training length. ``deadline`` (``time.monotonic()``): train what fits before
        it, and say so in the report; raise :class:`~pipeline.tabular.budget.OutOfTime` when
        nothing useful would."""
        if deadline is not None and deadline <= time.monotonic():
            raise OutOfTime("no time was left for it")
        started = time.perf_counter()
        fitted = self._fit(Job(data, rows, valid_rows, seeds, seed, progress, budget, deadline))
        fitted.report.seconds = time.perf_counter() - started
        return fitted

    @abstractmethod
    def _fit(self, job: Job) -> "Fitted":
        """The family's own training of ``job.rows``."""

    @classmethod
    @abstractmethod
    def declared(cls, family: str) -> dict:
        """The params of ``family`` and their defaults."""

    @classmethod
    @abstractmethod
    def build(cls, family: str, values: dict) -> "Member":
        """A member of ``family`` with ``values`` over its defaults; a bad value is a one-line error."""

    @abstractmethod
    def params(self) -> dict:
        """Every param of the member with its value."""

    @abstractmethod
    def restore(self, state: dict, metric: Metric, device: torch.device) -> "Fitted":
        """The fitted member whose :meth:`Fitted.state` is ``state``."""

    def sweep_config(self):
        """The stacked trainer's config that a sweep varies, or None: only torch families are swept."""
        return None

    def missing(self) -> str | None:
        """What this member needs that is not installed, as the command that installs it; None
        when nothing is missing."""
        return None

    def supports(self, task) -> bool:
        """Whether this member learns ``task`` (fitting one it does not is a one-line error)."""
        return True

    def used_params(self, task) -> dict:
        """The params this member uses on ``task``: its report's and the lock's."""
        return {"model": self.label, **{k: v for k, v in self.params().items() if k not in task.ignores}}


FAMILIES: dict[str, type[Member]] = {}  # a member table's "model" -> its family's class


def register(member: type[Member], *names: str) -> type[Member]:
    """Make ``member`` the family of each of ``names`` (a recipe's ``model = "NAME"``)."""
    FAMILIES.update(dict.fromkeys(names, member))
    return member


class Fitted(ABC):
    """A member trained on G row sets: G models that predict and save together. Its state names
    its family and params, from which :func:`pipeline.tabular.members.load_fitted` rebuilds it."""

    label: str
    report: FitReport

    @abstractmethod
    def predict(self, inputs: Inputs, rows: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(G, rows, outputs) on the device of ``inputs``: values for regression, class
        probabilities for classification. With ``rows``, only group g's ``rows[g]`` are needed:
        the others may be NaN (a booster's prediction of every row per fold is costly)."""

    @abstractmethod
    def state(self) -> dict:
        """Plain tensors and values (``torch.load(weights_only=True)`` safe), with ``family`` and
        ``params``: :func:`~pipeline.tabular.members.load_fitted` rebuilds the member from it."""


def predicted_rows(groups: int, length: int, rows: list[torch.Tensor] | None) -> list[np.ndarray]:
    """Each group's rows to predict, as numpy indices: ``rows`` or every row."""
    every = np.arange(length)
    return [every if rows is None else rows[g].cpu().numpy() for g in range(groups)]


def scatter(groups: list[np.ndarray], rows: list[np.ndarray], length: int) -> torch.Tensor:
    """Per group, its (rows, outputs) predictions at its ``rows`` of a (G, length, outputs)
    tensor, NaN elsewhere."""
    out = np.full((len(groups), length, groups[0].shape[1]), np.nan)
    for g, (values, index) in enumerate(zip(groups, rows)):
        out[g, index] = values
    return torch.from_numpy(out)


def score_groups(predictions: torch.Tensor, y: torch.Tensor, rows: list[torch.Tensor], metric: Metric) -> list[float]:
    """``metric`` of each group's (G, N, outputs) predictions on its own rows."""
    return [float(metric.score(metric.task.scored(p[r]), y[r])) for p, r in zip(predictions, rows)]


def mean_budget(values) -> float | None:
    values = [v for v in values if v]
    return float(np.mean(values)) if values else None
