"""A tabular CV's report: its headline numbers, each member's folds, the blend's weights, the
params the recipe used, and the pictures that fit what ran (see :mod:`pipeline.reports` for how
a report is written and read)."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline import plots, reports
from pipeline.params import plain
from pipeline.tabular.cv import RecipeScore
from pipeline.tabular.features import Features
from pipeline.tabular.recipe import Recipe


def cv_report(run_dir: Path, target: str, features: Features, recipe: Recipe, result: RecipeScore,
              seconds: float, device: torch.device) -> dict:
    """The report of a recipe's CV, with its pictures drawn into ``run_dir``."""
    score, metric = result.score, features.spec.scorer
    pictures = _pictures(run_dir, target, features, recipe, result)
    report = {
        "run": run_dir.name, "target": target, "command": "cv", "recipe": recipe.name or "one model",
        "metric": metric.name,
        "higher_is_better": metric.higher_is_better, "params": recipe.used_params(metric.task),
        "folds": [{"train": tr, "valid": va, "failed_epoch": fe}
                  for tr, va, fe in zip(score.train, score.valid, score.failed_epoch)],
        "mean_valid": score.mean_valid, "std_valid": score.std_valid,
        "seconds": seconds, "device": str(device), "created": reports.now(), "plots": [p.name for p in pictures],
        "columns": features.columns,
    }
    positive = metric.submits.positive_class(features.classes)
    if positive is not None:
        report["positive_class"] = plain(positive)
    report["members"] = [{"model": m.label, "mean_valid": m.mean_valid, "std_valid": m.std_valid,
                          "valid": m.valid, "weight": w, "seconds": m.seconds, "budget": b}
                         for m, w, b in zip(result.members, result.weights, result.budgets)]
    if len(result.members) > 1:
        report["blend"] = {"how": recipe.blend, "weights": result.weights, "fold_weights": result.fold_weights}
    if result.infold_seconds:
        report["infold_seconds"] = result.infold_seconds
    if recipe.seeds == "auto":  # what the time limit left room for
        report["seeds"] = result.seeds
    return report


def _pictures(run_dir: Path, target: str, features: Features, recipe: Recipe, result: RecipeScore) -> list[Path]:
    """Learning curves of the members trained in epochs, and the blend's out-of-fold predictions:
    against the truth for values, ROC and calibration for two classes, a confusion matrix for classes."""
    folds = f"{recipe.folds.folds}-fold {recipe.folds.split}"
    out = []
    score, metric = result.score, features.spec.scorer
    if score.train_curves:
        labels = ([f"fold {i + 1}" for i in range(recipe.folds.folds)] if len(result.members) == 1
                  else [f"{m.label} (fold mean)" for m in result.members if m.train_curves])
        out.append(plots.learning_curves_png(
            [{"label": label, "train": tr, "valid": va}
             for label, tr, va in zip(labels, score.train_curves, score.valid_curves)],
            run_dir / "curves.png", ylabel=metric.name, log_scale=not metric.higher_is_better,
            title=f"{target}: {' + '.join(m.label for m in result.members if m.train_curves)}, {folds}"))
    validated = ~result.blend_oof.isnan().any(1)  # a time split never validates its first block
    oof, y, label = result.blend_oof[validated], features.y[validated], features.spec.label
    if metric.task.continuous:
        out.append(plots.predictions_png(metric.label_space(y).numpy(), metric.space(oof[:, 0]).numpy(),
                                         run_dir / "predictions.png",
                                         label=f"{label} ({metric.name} space)" if metric.domain else label,
                                         title=f"{target}: out-of-fold blend, {folds}"))
        return out
    classes = features.classes
    if len(classes) == 2:
        out.append(plots.roc_png(y.numpy(), oof[:, 1].numpy(), run_dir / "roc.png",
                                 title=f"{target}: out-of-fold blend, positive class {classes[1]!r}"))
    confusion = torch.bincount(y * len(classes) + oof.argmax(1), minlength=len(classes) ** 2)
    out.append(plots.confusion_matrix_png(confusion.view(len(classes), -1).tolist(), [str(c) for c in classes],
                                          run_dir / "confusion.png", title=f"{target}: out-of-fold blend"))
    return out
