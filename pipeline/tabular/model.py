"""A trained recipe: each member fit on every training row for the training length its CV
chose (or, with ``final = "folds"``, its CV's fold models, averaged: :func:`bagged`), the blend
weights its CV fit, and the feature builder that made the inputs. It predicts
any rows with the training table's columns, and saves itself as a weights-only checkpoint (the
torch weights, LightGBM's text and scikit-learn's estimators and transformers through skops)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import checkpoints
from pipeline.errors import TrainingError
from pipeline.metrics import Metric
from pipeline.progress import Progress
from pipeline.tabular.budget import Budget, OutOfTime
from pipeline.tabular.ensemble import blend
from pipeline.tabular import infold
from pipeline.tabular.features import FeatureBuilder, Features
from pipeline.tabular.infold import InFold
from pipeline.tabular.members import FitReport, Fitted, Inputs, TrainingSet, load_fitted, score_groups
from pipeline.tabular.members.base import mean_budget
from pipeline.tabular.recipe import Recipe
from pipeline.tabular.stacking import StackedColumns, with_columns

FORMAT = "pipeline.model/1"  # pipeline.recipe/2 saved scikit-learn members as their test predictions


@dataclass
class TrainedModel:
    members: list[Fitted]
    weights: list[float]
    builder: FeatureBuilder
    metric: Metric
    classes: list
    encoders: InFold | None = None  # the in-fold columns' encoders, fit on every training row
    level1: int | None = None  # members[:level1] are level 1; the rest are stacked on their predictions
    stacked: StackedColumns | None = None  # how the level-2 members take them

    def predict(self, inputs: Inputs) -> np.ndarray:
        """The blend's (rows, outputs) predictions: values, or class probabilities."""
        return blend(self.predictions(inputs), self.metric, self.weights)[0].cpu().numpy()

    def predictions(self, inputs: Inputs) -> list[torch.Tensor]:
        """Each member's (1, rows, outputs) predictions (a bag's averaged over its models in the
        metric's space), level 1 then level 2."""
        level1 = len(self.members) if self.level1 is None else self.level1
        first = [self._pooled(m.predict(inputs)) for m in self.members[:level1]]
        if self.stacked is None:
            return first
        stacked = stacked_inputs(inputs, self.stacked.columns(torch.stack([p[0] for p in first]), self.metric))
        return first + [m.predict(stacked) for m in self.members[level1:]]

    def _pooled(self, predictions: torch.Tensor) -> torch.Tensor:
        if len(predictions) == 1:
            return predictions
        return self.metric.unspace(self.metric.space(predictions).mean(0, keepdim=True))

    def inputs(self, frame: pd.DataFrame, path, device: torch.device) -> Inputs:
        """A frame of the training table's feature columns as every member's inputs."""
        encoded = self.builder.transform(frame, path)
        extra = None if self.encoders is None else self.encoders.values(encoded.codes, encoded.texts)
        return Inputs(torch.from_numpy(encoded.dense).to(device), torch.from_numpy(encoded.native),
                      list(range(len(self.builder.numeric), len(self.builder.native_names))),
                      None if extra is None else extra.to(device))

    def test_inputs(self, features: Features, device: torch.device) -> Inputs:
        """The competition's test rows (already featurized) as every member's inputs."""
        extra = None if self.encoders is None else self.encoders.values(features.codes_test.numpy(),
                                                                         features.texts_test)
        return TrainingSet(features, device, test_extra=extra).test

    def save(self, path: Path, **extra) -> Path:
        return checkpoints.save(path, FORMAT, {
            **extra, "metric": self.metric.name, "members": [m.state() for m in self.members],
            "weights": self.weights, "builder": checkpoints.pack(self.builder), "classes": list(self.classes),
            "encoders": None if self.encoders is None else self.encoders.state(), "level1": self.level1,
            "stacked": None if self.stacked is None else self.stacked.state()})

    @classmethod
    def load(cls, path: Path, metric: Metric, device: torch.device, remake: str) -> tuple["TrainedModel", dict]:
        """A saved model and its checkpoint's other keys; a tampered or foreign file is refused in one line."""
        state = checkpoints.load(path, FORMAT, "tabular model", remake)
        with checkpoints.restoring(path, remake):
            members = [Bag.restore(m, metric, device) if "rounds" in m else load_fitted(m, metric, device)
                       for m in state["members"]]
            encoders = None if state["encoders"] is None else InFold.from_state(state["encoders"])
            stacked = None if state.get("stacked") is None else StackedColumns.from_state(state["stacked"])
            return cls(members, list(state["weights"]), checkpoints.unpack(state["builder"]), metric,
                       list(state["classes"]), encoders, state.get("level1"), stacked), state


class Bag(Fitted):
    """A member's fold models from every round of its CV (``final = "folds"``), each fold's
    reading its own in-fold columns: (rounds x folds, rows, outputs) predictions."""

    def __init__(self, rounds: list[Fitted]):
        self.rounds, self.label = rounds, rounds[0].label
        reports = [f.report for f in rounds]
        self.report = FitReport(sum(r.seconds for r in reports), np.max([r.failed_epoch for r in reports], axis=0),
                                mean_budget(r.budget for r in reports))

    def predict(self, inputs: Inputs, rows: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``rows``: each fold's, in every round."""
        return torch.cat([f.predict(inputs, rows) for f in self.rounds])

    def state(self) -> dict:
        return {"rounds": [f.state() for f in self.rounds]}

    @classmethod
    def restore(cls, state: dict, metric: Metric, device: torch.device) -> "Bag":
        return cls([load_fitted(f, metric, device) for f in state["rounds"]])


def bagged(features: Features, fitted: list[list[Fitted]], weights: list[float], encoders: InFold | None,
           device: torch.device) -> tuple[TrainedModel, float]:
    """``final = "folds"`` (AutoGluon's bagging): the CV's fold models of each member the blend
    weighs (``fitted``: per member, per round; none needed for the others), which predict every
    row with the in-fold columns of their fold's ``encoders``; nothing is fit again. Refused in
    one line as :func:`fit_final` refuses, and the blend's score on the training rows (each row
    seen by all folds but one)."""
    extra = (None, None) if encoders is None else (encoders.values(features.codes.numpy(), features.texts),
                                                   encoders.values(features.codes_test.numpy(), features.texts_test))
    data = TrainingSet(features, device, *extra)
    kept = [i for i, w in enumerate(weights) if w > 0]
    members = [Bag(fitted[i]) for i in kept]
    for member in members:
        _check(member, data)
    total = sum(weights[i] for i in kept)
    model = TrainedModel(members, [weights[i] / total for i in kept], features.builder, data.metric,
                         features.classes, encoders)
    rows = [torch.arange(len(features.X), device=device)]
    [train_score] = score_groups(blend(model.predictions(data.train), data.metric, model.weights), data.y, rows,
                                 data.metric)
    return model, train_score


def fit_final(features: Features, recipe: Recipe, members: list, weights: list[float], budgets: list[float | None],
              *, device: torch.device = torch.device("cpu"), progress: Progress = Progress(),
              budget: Budget | None = None, level1: int | None = None,
              oof: torch.Tensor | None = None) -> tuple[TrainedModel, float]:
    """The ``members`` the CV kept (``recipe.seeds`` copies each) on every training row, each
    trained as long as its CV chose, but those the blend gives no weight; refused in one line when
    a member diverges or predicts test values the metric cannot take. Also the blend's score on
    the training rows. Under ``budget`` each member gets an even share of what is left; one that
    cannot fit is left out of the blend, whose weights then sum to 1 again; when none can (the CV
    overran its share), the heaviest level-1 member is fit anyway, for the length its CV chose.

    ``members[level1:]`` are level 2: they take the level-1 members' out-of-fold predictions
    ``oof`` (level1, rows, outputs) of the training rows and those members' predictions of
    the test rows (so every level-1 member is fit when a level-2 one has weight)."""
    data, encoders = _final_data(features, recipe, device)
    rows = [torch.arange(len(features.X), device=device)]
    level1 = len(members) if level1 is None else level1
    stacking = any(w > 0 for w in weights[level1:])
    first = [i for i in range(level1) if weights[i] > 0 or stacking]
    second = [i for i in range(level1, len(members)) if weights[i] > 0]
    fitted: dict[int, Fitted] = {}

    def fit(i: int, on: TrainingSet, left: int | None) -> None:
        try:
            member = members[i].fit(on, rows, seeds=recipe.seeds, seed=recipe.folds.seed, progress=progress,
                                    budget=budgets[i], deadline=None if budget is None or left is None
                                    else budget.share(left))
        except OutOfTime as exc:
            budget.cut.append({"member": members[i].label, "why": exc.why})
            return
        if budget is not None and member.report.shortened:
            budget.shortened.append({"member": member.label, "how": member.report.shortened})
        _check(member, on)
        fitted[i] = member

    for n, i in enumerate(first):
        fit(i, data, len(first) + len(second) - n)
    stacked, level2 = None, data
    if second and len(fitted) < level1:  # a level-1 member the stack takes did not fit in time
        budget.cut += [{"member": members[i].label, "why": "a level-1 member it takes did not fit in time"}
                       for i in second]
    elif second:
        stacked, level2 = _level2_data(features, data, [fitted[i] for i in range(level1)], oof, device)
        for n, i in enumerate(second):
            fit(i, level2, len(second) - n)
    if not fitted:  # the CV overran its share (a busy machine): a submission from the heaviest level-1 member
        heaviest = max(range(level1), key=lambda i: weights[i])
        fit(heaviest, data, None)
        budget.cut = [c for c in budget.cut if c["member"] != members[heaviest].label]
        budget.shortened.append({"member": members[heaviest].label,
                                 "how": "fit alone, for its CV's length, after the time limit was spent"})
    order = sorted(fitted)
    kept = [weights[i] for i in order]
    weights = [w / sum(kept) for w in kept] if sum(kept) else [1.0]
    model_level1 = sum(i < level1 for i in order)
    model = TrainedModel([fitted[i] for i in order], weights, features.builder, data.metric, features.classes,
                         encoders, model_level1, stacked if any(i >= level1 for i in order) else None)
    predictions = [fitted[i].predict((data if i < level1 else level2).train) for i in order]
    [train_score] = score_groups(blend(predictions, data.metric, weights), data.y, rows, data.metric)
    return model, train_score


def _level2_data(features: Features, data: TrainingSet, level1: list[Fitted], oof: torch.Tensor,
                 device: torch.device) -> tuple[StackedColumns, TrainingSet]:
    """The level-2 members' training set: the training rows' out-of-fold columns ``oof`` and
    the test rows' columns of the ``level1`` members fit on every row."""
    stacked = StackedColumns.fit(oof, data.metric)
    test = torch.stack([member.predict(data.test)[0] for member in level1])
    return stacked, TrainingSet(features, device,
                                with_columns(data.extra, stacked.columns(oof.to(device), data.metric), 1),
                                with_columns(data.test.extra, stacked.columns(test, data.metric), 1))


def stacked_inputs(inputs: Inputs, columns: torch.Tensor) -> Inputs:
    """``inputs`` (one row set) with the level-2 ``columns`` after their in-fold ones."""
    return Inputs(inputs.dense, inputs.native, inputs.categorical, with_columns(inputs.extra, columns, 1))


def _final_data(features: Features, recipe: Recipe, device: torch.device) -> tuple[TrainingSet, InFold | None]:
    """Every training row as one row set, with the in-fold columns of encoders fit on all of
    them (out of fold within them for the training rows), and the test rows' from those encoders."""
    task = features.spec.scorer.task
    if not infold.width(features.codes, features.texts, task, task.outputs(features.classes)):
        return TrainingSet(features, device), None
    encoders, extra = infold.fit_infold(features.codes, features.texts, features.y, features.spec.scorer,
                                        task.outputs(features.classes), [torch.arange(len(features.X))],
                                        recipe.folds.seed)
    test_extra = encoders.values(features.codes_test.numpy(), features.texts_test)
    return TrainingSet(features, device, extra, test_extra), encoders


def _check(member: Fitted, data: TrainingSet) -> None:
    if member.report.failed_epoch.any():
        raise TrainingError(f"training diverged (non-finite loss) at epoch {member.report.failed_epoch.max()} "
                            f"({member.label}); no model was saved; lower lr")
    test = member.predict(data.test)
    if not torch.isfinite(test).all():
        raise TrainingError(f"ensemble member {member.label} predicted non-finite values; no model was saved")
    outside = data.metric.outside_domain(test.cpu().numpy().ravel())
    if outside.any():  # the metric's space would hide them (log_rmse clamps at 1), a submission must not
        raise TrainingError(f"ensemble member {member.label} predicted {int(outside.sum())} test value(s) "
                            f"that are not {data.metric.domain} ({data.metric.name} takes logs); no model was saved")
