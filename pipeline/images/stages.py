"""An image target's stages: download -> preprocess -> train -> evaluate, train -> submit.
Fashion-MNIST's are here, and what every image target's share (:func:`fit`, :func:`score`):
a competition declared in pipeline.toml takes its images from its own stages
(:mod:`pipeline.images.declared`).

Each model has its own checkpoint (``models/<target>-<model>.pt``) and lock section, so the
models of one workspace never make each other stale.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from pipeline import checkpoints, plots, reports
from pipeline.devices import resolve_device
from pipeline.folds import fold_rows
from pipeline.images.data import CACHE_NAME, CLASS_NAMES, load_fashion
from pipeline.images.models import Shape, architecture
from pipeline.images.sets import ImageSet
from pipeline.images.train import check_tta, classifier_params, evaluate as evaluate_model, fit_classifier, predict
from pipeline.make import Context, Stage, every_param, keys
from pipeline.params import plain
from pipeline.submissions import write_copies

CHECKPOINT_FORMAT = "pipeline.classifier/1"


def _model_path(ctx: Context) -> Path:
    return ctx.workspace.models / f"{ctx.target.name}-{ctx.params['model']}.pt"


def download(ctx: Context) -> tuple[list[Path], dict]:
    paths = ctx.target.fetch(ctx.workspace.data, ctx.mirrors)
    return paths, {"files": [ctx.rel(p) for p in paths]}


def preprocess(ctx: Context) -> tuple[list[Path], dict]:
    data = load_fashion(ctx.workspace.data)
    return [ctx.workspace.data / "fashion-mnist" / CACHE_NAME], {"train": len(data.train_labels),
                                                                  "test": len(data.test_labels)}


def _fashion(ctx: Context) -> ImageSet:
    """Fashion-MNIST's images; its labelled test set scores the model, and a submission holds
    each test image's class number."""
    data = load_fashion(ctx.workspace.data)
    return ImageSet(data.train_images, data.train_labels.long(), data.test_images,
                    list(range(len(data.test_images))), list(range(len(CLASS_NAMES))), list(CLASS_NAMES), Shape(),
                    (data.test_images, data.test_labels.long()))


def train(ctx: Context) -> tuple[list[Path], dict]:
    return fit(ctx, _fashion)


def evaluate(ctx: Context) -> tuple[list[Path], dict]:
    return score(ctx, _fashion)


def submit(ctx: Context) -> tuple[list[Path], dict]:
    data = _fashion(ctx)
    labels = test_logits(ctx, data).argmax(1).numpy()
    frame = pd.DataFrame({"Id": data.test_ids, "Label": labels})
    return write_copies(ctx.workspace.submissions / f"{ctx.target.name}-{ctx.params['model']}.csv", ctx.out, frame,
                        id_column="Id", label_column="Label", expected_ids=data.test_ids, classes=data.classes)


def fit(ctx: Context, images: Callable[[Context], ImageSet]) -> tuple[list[Path], dict]:
    """The train stage on ``images(ctx)``: each fold's model for its score (or one model and its
    held-out curves), then the saved model."""
    name, seed = ctx.params["model"], int(ctx.params["seed"])
    # the target's own params are those it has defaults for; the classifier takes (and checks) the rest
    own = {k: v for k, v in ctx.params.items() if k not in ctx.target.defaults}
    resolved = classifier_params(name, own)
    data = images(ctx)
    device = resolve_device(ctx.device)
    x, y = data.images, data.labels
    folds = int(ctx.params["folds"])
    splits, learnable = _splits(ctx, data)
    started = time.perf_counter()
    histories, scores, model = [], [], None
    for i, (tr, va) in enumerate(splits):
        model, history = fit_classifier(name, own, x[tr], y[tr], x[va] if len(va) else None,
                                        y[va] if len(va) else None, device=device, seed=seed + i,
                                        progress=ctx.progress(f"train {ctx.target.name}" + (f" fold {i + 1}/{folds}"
                                                                                          if folds >= 2 else "")),
                                        shape=data.shape)
        histories.append(history)
        if len(va):
            scores.append(evaluate_model(model, x[va], y[va], device)["accuracy"])
    if folds >= 2:  # the K fold models were for scoring; the saved model trains on every row it may learn from
        model, _ = fit_classifier(name, own, x[learnable], y[learnable], device=device, seed=seed,
                                  progress=ctx.progress(f"train {ctx.target.name} on every row"), shape=data.shape)
    path = checkpoints.save(_model_path(ctx), CHECKPOINT_FORMAT, {
        "model": name, "params": resolved.to_dict(), "shape": asdict(data.shape),
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "classes": list(data.names)})
    paths, report = _train_report(ctx, histories, scores, started, device)
    return [path, *paths], report


def _splits(ctx: Context, data: ImageSet) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """The (train, valid) rows of each fold, or of the one held-out split when folds < 2; and the
    rows the model fit after K folds learns from."""
    seed, folds = int(ctx.params["seed"]), int(ctx.params["folds"])
    rest, held = data.split(seed, float(ctx.params["valid_fraction"]))
    learnable = data.learnable(rest)
    if folds >= 2:
        return [(learnable[tr], learnable[va]) for tr, va in
                fold_rows(data.labels[learnable], folds, "shuffled", seed, stratify=True)], learnable
    return [(rest, held)], learnable


def _train_report(ctx: Context, histories: list, scores: list, started: float,
                  device: torch.device) -> tuple[list[Path], dict]:
    """The train run's report, with each fold's learning curves."""
    name, folds = ctx.params["model"], int(ctx.params["folds"])
    run_dir = reports.new_run_dir(ctx.workspace, ctx.target.name, "train")
    plot = plots.learning_curves_png(
        [{"label": f"fold {i + 1}" if folds >= 2 else name,
          "train": [h["train_loss"] for h in hist],
          "valid": [h["valid_loss"] for h in hist] if hist and hist[0]["valid_loss"] is not None else None}
         for i, hist in enumerate(histories)],
        run_dir / "curves.png", ylabel="cross-entropy", title=f"{ctx.target.name}: {name}")
    report = {"run": run_dir.name, "target": ctx.target.name, "command": "train", "metric": "accuracy",
              "params": {k: plain(v) for k, v in sorted(ctx.params.items())}, "history": histories,
              "folds": [{"train": h[-1]["train_accuracy"], "valid": s} for h, s in zip(histories, scores)],
              "seconds": time.perf_counter() - started, "device": str(device), "created": reports.now(),
              "plots": [plot.name]}
    if scores:
        report.update(mean_valid=float(np.mean(scores)), std_valid=float(np.std(scores)),
                      valid_accuracy=float(np.mean(scores)))
    reports.save_report(run_dir, report, ctx.workspace)
    return [run_dir / "report.json", plot], report


def load_classifier(path: Path, device: torch.device):
    """A saved classifier, in eval mode on ``device``; a tampered or foreign file is refused."""
    target, _, name = path.stem.rpartition("-")
    remake = f"pipeline train {target} --model {name}"
    state = checkpoints.load(path, CHECKPOINT_FORMAT, "classifier", remake)
    with checkpoints.restoring(path, remake):
        arch = architecture(state["model"])
        model = arch.build(arch.own(state["params"]), Shape(**state.get("shape", {})))  # none: Fashion-MNIST's
        model.load_state_dict(state["state_dict"])
    return model.to(device).eval(), state


def score(ctx: Context, images: Callable[[Context], ImageSet]) -> tuple[list[Path], dict]:
    """The evaluate stage on ``images(ctx)``: the saved model's accuracy on the scored images (the
    held-out ones when there are none), per class, the confusion matrix and a prediction grid."""
    started = time.perf_counter()
    data = images(ctx)
    device = resolve_device(ctx.device)
    model, state = load_classifier(_model_path(ctx), device)
    tta = _tta(ctx, state)
    x, y = data.evaluation(data.split(int(ctx.params["seed"]), float(ctx.params["valid_fraction"]))[1])
    result = evaluate_model(model, x, y, device, tta=tta)
    run_dir = reports.new_run_dir(ctx.workspace, ctx.target.name, "evaluate")
    confusion = plots.confusion_matrix_png(result["confusion"], data.names, run_dir / "confusion.png",
                                           title=f"{state['model']}: test accuracy {result['accuracy']:.4f}")
    shown = torch.arange(min(18, len(y)))
    predicted = predict(model, x[shown], device, tta=tta).argmax(1).cpu()
    grid = plots.prediction_grid_png(x[shown], y[shown], predicted, data.names, run_dir / "predictions.png")
    report = {"run": run_dir.name, "target": ctx.target.name, "command": "evaluate", "metric": "accuracy",
              "params": {"model": state["model"], **state["params"]}, "images": len(y),
              "tta": tta, "test_accuracy": result["accuracy"], "test_loss": result["loss"],
              "per_class": dict(zip(data.names, result["per_class"])), "confusion": result["confusion"],
              "seconds": time.perf_counter() - started, "device": str(device), "created": reports.now(),
              "plots": [confusion.name, grid.name]}
    path = reports.save_report(run_dir, report, ctx.workspace)
    return [path, confusion, grid], report


def test_logits(ctx: Context, data: ImageSet) -> torch.Tensor:
    """The saved model's logits for the test images (with ``tta``, of each image and its mirror), on the CPU."""
    device = resolve_device(ctx.device)
    model, state = load_classifier(_model_path(ctx), device)
    return predict(model, data.test, device, tta=_tta(ctx, state)).cpu()


def _tta(ctx: Context, state: dict) -> bool:
    """``--tta``, refused for a saved model trained without mirror images."""
    tta = bool(ctx.params["tta"])
    check_tta(tta, state["params"].get("flip", True))
    return tta


STAGES = (
    Stage("download", (), keys(), download),
    Stage("preprocess", ("download",), keys(), preprocess),
    Stage("train", ("preprocess",), every_param(besides=("tta",)), train),
    Stage("evaluate", ("train",), keys("model", "tta"), evaluate),
    Stage("submit", ("train",), keys("model", "tta"), submit),
)
