"""Torch members: a linear model or an MLP, stacked. All row sets, and a member's submodels
times ``seeds`` initialisations, train as one :class:`~pipeline.tabular.stacked.StackedModel`
(:func:`pipeline.tabular.trainer.fit`), and its prediction is their mean. Its params are
:class:`~pipeline.tabular.trainer.TrainParams`; a linear model has no hidden layers."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from pipeline.metrics import Metric
from pipeline.tabular.members.base import FitReport, Fitted, Inputs, Job, Member, mean_budget, register
from pipeline.tabular.stacked import MODELS, StackedModel
from pipeline.tabular.target_transform import TargetTransform
from pipeline.tabular.trainer import TrainParams, fit, predict_raw, predictions

LAYER_PARAMS = ("hidden", "activation", "dropout")  # what only a model with hidden layers uses


@dataclass(frozen=True)
class TorchMember(Member):
    config: TrainParams

    @property
    def family(self) -> str:
        return self.config.model

    @classmethod
    def declared(cls, family: str) -> dict:
        """The params of a ``family`` ("linear" or "mlp") and their defaults."""
        params = TrainParams(model=family)
        hidden = bool(params.widths)
        return {f.name: getattr(params, f.name) for f in fields(TrainParams)
                if f.name != "model" and (hidden or f.name not in LAYER_PARAMS)}

    @classmethod
    def build(cls, family: str, values: dict) -> "TorchMember":
        return cls(TrainParams.from_dict({**values, "model": family}))

    def params(self) -> dict:
        values = self.config.to_dict()
        return {k: values[k] for k in self.declared(self.family)}

    def sweep_config(self) -> TrainParams:
        return self.config

    def restore(self, state: dict, metric: Metric, device: torch.device) -> "TorchFitted":
        return TorchFitted.from_state(state, metric, device)

    def _fit(self, job: Job) -> "TorchFitted":
        """Every row set and seed as one stacked model: the seeds are more submodels."""
        data, params = job.data, self.config.with_(submodels=self.config.submodels * job.seeds)
        if job.budget is not None:  # the epochs the folds chose on their inner splits, for every row
            params = params.with_(epochs=max(1, round(job.budget)), inner_valid=0.0)
        step = job.progress.step(self.label, params.epochs, "epoch", data.metric.higher_is_better)
        result = fit(data.X, data.y, job.rows, [params], metric=data.metric, valid_rows=job.valid_rows,
                     n_out=data.n_out, seed=job.seed, curves=job.valid_rows is not None,
                     on_epoch=lambda epoch, epochs, curves: step.advance(1, curves), extra=data.extra,
                     deadline=job.deadline)
        step.close()
        report = FitReport(
            result.seconds, result.failed_epoch[:, 0],
            None if result.best_epoch is None else mean_budget(result.best_epoch[:, 0]),
            (result.train_curve[:, :, 0], None if result.valid_curve is None else result.valid_curve[:, :, 0]),
            f"{result.epochs_run} of {result.planned} epochs" if result.stopped == "time" else "")
        return TorchFitted(result.model, result.configs[0], result.transform, report)


class TorchFitted(Fitted):
    def __init__(self, model: StackedModel, config: TrainParams, transform: TargetTransform, report: FitReport):
        self.model, self.config, self.transform, self.report = model, config, transform, report
        self.label = config.model

    def predict(self, inputs: Inputs, rows: list[torch.Tensor] | None = None) -> torch.Tensor:
        extra = None if inputs.extra is None else inputs.extra.to(self.model.device)
        raw = predict_raw(self.model, inputs.dense.to(self.model.device), extra)  # (G, N, submodels, outputs)
        return predictions(raw, self.transform, self.config.submodels)[:, :, 0].to(inputs.device)

    def state(self) -> dict:
        return {"family": self.config.model, "params": TorchMember(self.config).params(),
                **self.model.state({"config": self.config.to_dict(), "transform": self.transform.state()})}

    @classmethod
    def from_state(cls, state: dict, metric: Metric, device: torch.device) -> "TorchFitted":
        config = TrainParams.from_dict(state["config"])
        return cls(StackedModel.from_state(state, device), config,
                   TargetTransform.from_state(state["transform"], metric),
                   FitReport(0.0, torch.zeros(state["groups"], dtype=torch.long).numpy()))


register(TorchMember, *MODELS)
