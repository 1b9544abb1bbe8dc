"""The template of families that fit one library model per row set and seed (scikit-learn's
estimators, LightGBM's boosters).

It keeps the books they share: the target transform (log space, the labels' range), the loop
over row sets and seeds, the deadline's share of each fit, progress, the fit report, averaging
the seeds' predictions and saving them. A family writes how one model fits (:meth:`_fit_one`),
predicts (:meth:`_predict_one`) and saves (:meth:`_dump`, :meth:`_load`), on the columns it
takes (:meth:`columns`).
"""

from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import asdict, dataclass

import numpy as np
import torch

from pipeline.constraints import build
from pipeline.metrics import Metric
from pipeline.params import plain
from pipeline.tabular.budget import OutOfTime, part
from pipeline.tabular.members.base import FitReport, Fitted, Inputs, Job, Member, TrainingSet, mean_budget, \
    predicted_rows, scatter
from pipeline.tabular.target_transform import TargetTransform


@dataclass
class OneFit:
    """What one model's fit is given besides its rows: the data, its seed, the generator of
    its inner split, a fixed training length (``budget``) and the time to stop at (``stop``)."""

    data: TrainingSet
    seed: int | None
    generator: np.random.Generator
    budget: float | None
    stop: float | None

    def inner_split(self, rows: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` shuffled into the ones a model trains on and the ``share`` it stops early on."""
        order = self.generator.permutation(rows)
        cut = max(1, round(share * len(order)))
        return order[cut:], order[:cut]


class LibraryMember(Member):
    """A family of one library model per row set and seed."""

    stops_at_deadline = False  # its fits stop at their share of the deadline; else the rest's time is projected
    clips = False  # its predictions are kept inside the training labels' range
    stopped = "training stopped"  # what the report says its deadline did

    def columns(self, inputs: Inputs, group: int) -> np.ndarray:
        """Row set ``group``'s columns as this family takes them: the native ones for trees, else the dense ones."""
        return inputs.native_of(group) if self.native else inputs.dense_of(group)

    def check(self, task) -> None:
        """Refuse, before any fit, params this family cannot take on ``task``."""

    def seeds_of(self, seeds: int, seed: int) -> list:
        """The seeds of each row set's models, averaged."""
        return [seed + s for s in range(seeds)]

    @abstractmethod
    def _fit_one(self, X: np.ndarray, target: np.ndarray, rows: np.ndarray, one: OneFit) -> tuple[object, float | None]:
        """A model fit on ``rows`` of ``X`` and ``target``, and the training length it chose (or None)."""

    @abstractmethod
    def _predict_one(self, model, X: np.ndarray, task, outputs: int) -> np.ndarray:
        """``model``'s (rows, outputs) predictions of ``X``, in the learned space."""

    @abstractmethod
    def _dump(self, models: list[list]) -> object:
        """The models as a weights-only checkpoint holds them."""

    @abstractmethod
    def _load(self, dumped) -> list[list]:
        """The models from :meth:`_dump`'s output."""

    def _fit(self, job: Job) -> "LibraryFitted":
        data = job.data
        self.check(data.task)
        transform = TargetTransform.choose(data.metric, self.params()["log_target"], data.y)
        target = transform.learned(torch.from_numpy(data.labels).double()).numpy() if transform.log else data.labels
        transform.fit(torch.from_numpy(np.asarray(target, dtype=np.float64)), [r.cpu() for r in job.rows],
                      clip=self.clips)
        seeds, generator = self.seeds_of(job.seeds, job.seed), np.random.default_rng(job.seed)
        step = job.progress.step(self.label, len(job.rows) * len(seeds), "fit")
        models, chosen, timed_out = [], [], 0
        share = None if job.deadline is None else job.deadline - time.monotonic()
        for g, group in enumerate(job.rows):
            X, rows, began = self.columns(data.train, g), group.cpu().numpy(), time.monotonic()
            models.append([])
            for s, seed in enumerate(seeds):
                stop = part(job.deadline, (len(job.rows) - g) * len(seeds) - s) if self.stops_at_deadline else None
                model, best = self._fit_one(X, target, rows, OneFit(data, seed, generator, job.budget, stop))
                timed_out += stop is not None and time.monotonic() >= stop
                models[-1].append(model)
                chosen.append(best)
                step.advance()
            self._keep_pace(job, g, time.monotonic() - began, share, step)
        step.close()
        fits = len(job.rows) * len(seeds)
        report = FitReport(0.0, np.zeros(len(models), dtype=int), mean_budget(chosen),
                           shortened=f"{self.stopped} for time in {timed_out} of {fits} fits" if timed_out else "")
        return LibraryFitted(self, models, transform, data.n_out, report)

    def _keep_pace(self, job: Job, g: int, seconds: float, share: float | None, step) -> None:
        """A family that cannot stop its fits early: end once the rest would end past the deadline."""
        left = len(job.rows) - g - 1
        if self.stops_at_deadline or job.deadline is None or time.monotonic() + seconds * left <= job.deadline:
            return
        step.close()
        raise OutOfTime(f"its {len(job.rows)} fits would take about {seconds * len(job.rows):.0f} s; "
                        f"its share was {share:.0f} s")

    def restore(self, state: dict, metric: Metric, device: torch.device) -> "LibraryFitted":
        models = self._load(state["models"])
        return LibraryFitted(self, models, TargetTransform.from_state(state["transform"], metric), state["n_out"],
                             FitReport(0.0, np.zeros(len(models), dtype=int)))


def estimator_outputs(estimator, X: np.ndarray, task, outputs: int) -> np.ndarray:
    """A scikit-learn estimator's (rows, outputs) predictions: its values, or its classes'
    probabilities (0 for a class absent from the rows it was fit on)."""
    if task.continuous:
        return task.as_outputs(estimator.predict(X), outputs)
    return task.as_outputs(estimator.predict_proba(X), outputs, estimator.classes_)


class ConfiguredMember(LibraryMember):
    """A library family whose params are one frozen dataclass (its ``Params``, whose fields are
    :func:`~pipeline.constraints.param`), held as ``config``: declared, built and reported from it."""

    Params: type

    @classmethod
    def declared(cls, family: str) -> dict:
        return asdict(cls.Params())

    @classmethod
    def build(cls, family: str, values: dict) -> "ConfiguredMember":
        return cls(build(cls.Params, values, f"ensemble member {family}"))

    def params(self) -> dict:
        return asdict(self.config)


class LibraryFitted(Fitted):
    """Each row set's models (its seeds), averaged in the learned space."""

    def __init__(self, member: LibraryMember, models: list[list], transform: TargetTransform, n_out: int,
                 report: FitReport):
        self.member, self.models, self.transform, self.n_out, self.report = member, models, transform, n_out, report
        self.label = member.label

    def predict(self, inputs: Inputs, rows: list[torch.Tensor] | None = None) -> torch.Tensor:
        task, wanted = self.transform.metric.task, predicted_rows(len(self.models), len(inputs), rows)
        values = [np.mean([self.member._predict_one(model, self.member.columns(inputs, g)[index], task, self.n_out)
                           for model in models], axis=0) for g, (models, index) in enumerate(zip(self.models, wanted))]
        return self.transform.inverse(scatter(values, wanted, len(inputs))).to(inputs.device, torch.float32)

    def state(self) -> dict:
        return {"family": self.member.family, "params": plain(self.member.params()),
                "models": self.member._dump(self.models), "transform": self.transform.state(), "n_out": self.n_out}
