"""A tabular target's stages: download -> preprocess -> cv, preprocess -> train -> submit.

Each body reads what its upstream stages wrote, writes its outputs atomically and returns them
with a summary (the report of ``cv``); :mod:`pipeline.make` decides when it runs.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pandas as pd
import torch

from pipeline import checkpoints, params as params_file, plots, reports
from pipeline.devices import resolve_device
from pipeline.errors import DataError, TrainingError
from pipeline.make import Context, Stage, plain
from pipeline.submissions import write_copies
from pipeline.tabular.cv import cross_validate, cross_validate_recipe, fit_final, predict_blend
from pipeline.tabular.features import FeatureParams, Features, build_features
from pipeline.tabular.ensemble import blend
from pipeline.tabular.members import TrainingSet, load_fitted, recipe_members, score_groups
from pipeline.tabular.search import search
from pipeline.tabular.tables import load_tables, outside_domain
from pipeline.tabular.trainer import TrainParams

log = logging.getLogger(__name__)

FEATURE_KEYS = tuple(FeatureParams.__dataclass_fields__)
TRAIN_KEYS = tuple(TrainParams.__dataclass_fields__)
RECIPE_KEYS = TRAIN_KEYS + ("ensemble", "seeds", "recipe", "blend")
CV_KEYS = ("folds", "split", "seed")
CHECKPOINT_FORMAT = "pipeline.recipe/2"  # /1 told members apart by their keys


def _features_path(ctx: Context) -> Path:
    return ctx.workspace.data / ctx.target.name / "features.pt"


def _model_path(ctx: Context) -> Path:
    return ctx.workspace.models / f"{ctx.target.name}.pt"


def download(ctx: Context) -> tuple[list[Path], dict]:
    paths = ctx.target.fetch(ctx.workspace.data, ctx.mirrors)
    return paths, {"files": [ctx.rel(p) for p in paths]}


def preprocess(ctx: Context) -> tuple[list[Path], dict]:
    tables = load_tables(*ctx.target.table_paths(ctx.workspace.data), ctx.target.spec)
    features = build_features(tables, FeatureParams(**{k: ctx.params[k] for k in FEATURE_KEYS}))
    path = _features_path(ctx)
    checkpoints.save(path, "pipeline.features/1", features.to_state())
    return [path], {"rows": len(features.X), "test_rows": len(features.X_test), "columns": len(features.names)}


def load_features(ctx: Context) -> Features:
    path = _features_path(ctx)
    state = checkpoints.load(path, "pipeline.features/1", "features", f"pipeline preprocess {ctx.target.name}")
    with checkpoints.restoring(path, f"pipeline preprocess {ctx.target.name}"):
        return Features.from_state({k: v for k, v in state.items() if k != "format"})


def train_params(params: dict) -> TrainParams:
    return TrainParams.from_dict({k: params[k] for k in TRAIN_KEYS})


def members(params: dict) -> list:
    """The recipe's members: the base params alone, or one per ``ensemble`` table."""
    return recipe_members(train_params(params), params.get("ensemble") or [])


def public_params(ctx: Context) -> dict:
    return {k: plain(v) for k, v in sorted(ctx.params.items())}


# Training params that only some models or tasks use.
ONLY_MLP = {"hidden", "activation", "dropout"}
ONLY_REGRESSION = {"log_target", "standardize"}
ONLY_CLASSIFICATION = {"label_smoothing"}


def applicable_params(params: dict, task: str) -> dict:
    """The params this recipe uses: its folds', its features', its members' own, and those of
    the base params that its torch members inherit (d2l's lr means nothing to a Lasso)."""
    unused = ONLY_CLASSIFICATION if task == "regression" else ONLY_REGRESSION

    def used(model: str) -> set:
        return set(TRAIN_KEYS) - unused - (set() if model == "mlp" else ONLY_MLP)

    keys = {"recipe", *CV_KEYS, *FEATURE_KEYS}
    ensemble = params.get("ensemble") or []
    if ensemble:
        keys |= {"seeds", "blend", "ensemble"}
        for table in ensemble:
            model = table.get("model", params["model"])
            if model in ("linear", "mlp"):
                keys |= used(model) - set(table)
    else:
        keys |= used(params["model"]) | {"seeds"}
    return {k: plain(params[k]) for k in sorted(keys) if k in params and (k != "recipe" or params[k])}


def _pictures(run_dir: Path, ctx: Context, features: Features, result) -> list[Path]:
    """The pictures that fit what ran: learning curves of the members trained in epochs, and
    the blend's out-of-fold predictions: against the truth for regression, ROC and calibration
    for a binary target, a confusion matrix for classes."""
    score, metric, spec = result.score, features.spec.scorer, features.spec
    folds, split, name = ctx.params["folds"], ctx.params["split"], ctx.target.name
    out = []
    if score.train_curves:
        labels = ([f"fold {i + 1}" for i in range(folds)] if len(result.members) == 1
                  else [f"{m.label} (fold mean)" for m in result.members if m.train_curves])
        out.append(plots.learning_curves_png(
            [{"label": label, "train": tr, "valid": va}
             for label, tr, va in zip(labels, score.train_curves, score.valid_curves)],
            run_dir / "curves.png", ylabel=metric.name, log_scale=not metric.higher_is_better,
            title=f"{name}: {' + '.join(m.label for m in result.members if m.train_curves)}, {folds}-fold {split}"))
    oof, y = result.blend_oof, features.y
    if spec.task == "regression":
        out.append(plots.predictions_png(metric.label_space(y).numpy(), metric.space(oof[:, 0]).numpy(),
                                         run_dir / "predictions.png",
                                         label=f"{spec.label} ({metric.name} space)" if metric.domain else spec.label,
                                         title=f"{name}: out-of-fold blend, {folds}-fold {split}"))
    else:
        if len(features.classes) == 2:
            out.append(plots.roc_png(y.numpy(), oof[:, 1].numpy(), run_dir / "roc.png",
                                     title=f"{name}: out-of-fold blend, positive class {features.classes[1]!r}"))
        confusion = torch.bincount(y * len(features.classes) + oof.argmax(1), minlength=len(features.classes) ** 2)
        out.append(plots.confusion_matrix_png(confusion.view(len(features.classes), -1).tolist(),
                                              [str(c) for c in features.classes], run_dir / "confusion.png",
                                              title=f"{name}: out-of-fold blend"))
    return out


def _oof_path(ctx: Context) -> Path:
    return ctx.workspace.data / ctx.target.name / "oof.pt"


def cv(ctx: Context) -> tuple[list[Path], dict]:
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    recipe = members(ctx.params)
    folds, split = ctx.params["folds"], ctx.params["split"]
    result, seconds = cross_validate_recipe(
        features, recipe, seeds=int(ctx.params["seeds"]), folds=folds, split=split, seed=ctx.params["seed"],
        device=device, blend_with=ctx.params["blend"], progress=ctx.progress(f"cv {ctx.target.name}"),
        backend=ctx.backend)
    score, metric = result.score, features.spec.scorer
    run_dir = reports.new_run_dir(ctx.workspace, ctx.target.name, "cv")
    pictures = _pictures(run_dir, ctx, features, result)
    report = {
        "run": run_dir.name, "target": ctx.target.name, "command": "cv", "metric": metric.name,
        "params": applicable_params(ctx.params, features.spec.task), "folds": [
            {"train": tr, "valid": va, "failed_epoch": fe}
            for tr, va, fe in zip(score.train, score.valid, score.failed_epoch)],
        "mean_valid": score.mean_valid, "std_valid": score.std_valid,
        "seconds": seconds, "device": str(device), "created": reports.now(),
        "plots": [p.name for p in pictures],
    }
    if metric.submits == "probabilities" and len(features.classes) == 2:
        report["positive_class"] = plain(features.classes[-1])
    report["members"] = [{"model": m.label, "mean_valid": m.mean_valid, "std_valid": m.std_valid,
                          "valid": m.valid, "weight": w, "seconds": m.seconds, "budget": b}
                         for m, w, b in zip(result.members, result.weights, result.budgets)]
    if len(result.members) > 1:
        report["blend"] = {"how": ctx.params["blend"], "weights": result.weights, "fold_weights": result.fold_weights}
    if score.failed:
        bad = [f"fold {i + 1} at epoch {e}" for i, e in enumerate(score.failed_epoch) if e]
        log.warning("training diverged (non-finite loss): %s; lower --lr", ", ".join(bad))
    oof = checkpoints.save(_oof_path(ctx), "pipeline.oof/1", {
        "members": [m.label for m in recipe], "predictions": result.oof, "weights": result.weights,
        "budgets": result.budgets})
    path = reports.save_report(run_dir, report, ctx.workspace)
    return [path, run_dir / "report.md", run_dir / "report.html", *pictures, oof], report


def train(ctx: Context) -> tuple[list[Path], dict]:
    """Every member on every row, with the blend weights and training lengths of its CV."""
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    recipe = members(ctx.params)
    remake = f"pipeline cv {ctx.target.name}"
    oof = checkpoints.load(_oof_path(ctx), "pipeline.oof/1", "out-of-fold", remake)
    with checkpoints.restoring(_oof_path(ctx), remake):
        if oof["members"] != [m.label for m in recipe]:
            raise ValueError(f"members {oof['members']} are not the recipe's")
        weights, budgets = list(oof["weights"]), list(oof["budgets"])
    fitted, data = fit_final(features, recipe, seeds=int(ctx.params["seeds"]), seed=ctx.params["seed"],
                             device=device, budgets=budgets, progress=ctx.progress(f"train {ctx.target.name}"))
    for member in fitted:
        if member.failed_epoch.any():
            raise TrainingError(f"training diverged (non-finite loss) at epoch {member.failed_epoch.max()} "
                                f"({member.label}); no model was saved; lower --lr")
        test = member.predict(data.test)
        if not torch.isfinite(test).all():
            raise TrainingError(f"ensemble member {member.label} predicted non-finite values; no model was saved")
        outside = outside_domain(test.cpu().numpy().ravel(), data.metric)
        if outside.any():  # the metric's space would hide them (log_rmse clamps at 1), a submission must not
            raise TrainingError(f"ensemble member {member.label} predicted {int(outside.sum())} test value(s) "
                                f"that are not {data.metric.domain} ({data.metric.name} takes logs); "
                                "no model was saved")
    path = checkpoints.save(_model_path(ctx), CHECKPOINT_FORMAT, {
        "target": ctx.target.name, "params": public_params(ctx), "features": features.names,
        "metric": features.spec.metric, "members": [m.state() for m in fitted], "weights": weights})
    blended = blend([m.predict(data.train) for m in fitted], data.metric, weights)
    [train_score] = score_groups(blended, data.y, [torch.arange(len(data.y), device=device)], data.metric)
    return [path], {"model": ctx.rel(path), "train": train_score, "seconds": sum(m.seconds for m in fitted),
                    "device": str(device), "weights": weights}


def load_model(path: Path, metric, device: torch.device) -> tuple[list, dict]:
    """A saved recipe's fitted members; a tampered or foreign file is refused with one line."""
    remake = "pipeline train"
    state = checkpoints.load(path, CHECKPOINT_FORMAT, "tabular", remake)
    with checkpoints.restoring(path, remake):
        return [load_fitted(m, metric, device) for m in state["members"]], state


def submission_frame(features: Features, predictions) -> tuple[pd.DataFrame, dict]:
    """What the metric scores: values, class labels, P(positive class), or one probability
    column per class (Kaggle's multiclass format); and the checks the frame must pass."""
    spec, metric = features.spec, features.spec.scorer
    ids = {spec.id: features.test_ids}
    checks = dict(id_column=spec.id, expected_ids=features.test_ids)
    if metric.submits == "values":
        return pd.DataFrame({**ids, spec.label: predictions}), dict(
            checks, label_column=spec.label, positive=metric.domain == "positive",
            non_negative=metric.domain == "non-negative")
    if metric.submits == "labels":
        labels = [features.classes[i] for i in predictions.argmax(1)]
        return pd.DataFrame({**ids, spec.label: labels}), dict(checks, label_column=spec.label,
                                                               classes=features.classes)
    if len(features.classes) == 2:
        return pd.DataFrame({**ids, spec.label: predictions[:, 1]}), dict(checks, label_column=spec.label,
                                                                          probabilities=True)
    columns = [str(c) for c in features.classes]
    return pd.DataFrame({**ids, **dict(zip(columns, predictions.T))}), dict(checks, label_column=columns,
                                                                            probabilities=True)


def submit(ctx: Context) -> tuple[list[Path], dict]:
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    fitted, state = load_model(_model_path(ctx), features.spec.scorer, device)
    if state["features"] != features.names:
        raise DataError(f"{_model_path(ctx)} was trained on other features; run `pipeline train {ctx.target.name}`")
    data = TrainingSet(features, device)
    predictions = predict_blend(fitted, data.test, features.spec.scorer, state.get("weights"))
    frame, checks = submission_frame(features, predictions)
    return write_copies(ctx.workspace.submissions / f"{ctx.section}.csv", ctx.out, frame, **checks)


def sweep(ctx: Context, grid: dict[str, list], save: bool = True, space: dict | None = None,
          trials: int = 0, batch: int = 32) -> dict:
    """Cross-validate every config of ``grid`` over the current params, or, with a ``space`` of
    ranges, ``trials`` configs proposed by Optuna's TPE ``batch`` at a time; rank them all and
    save the best one's swept params. Nothing is written unless every config trained."""
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    base = train_params(ctx.params)
    options = dict(folds=ctx.params["folds"], split=ctx.params["split"], seed=ctx.params["seed"], device=device,
                   backend=ctx.backend, progress=ctx.progress(f"sweep {ctx.target.name}"))
    started = time.perf_counter()
    if space is None:
        configs = [base.with_(**overrides) for overrides in params_file.expand_grid(grid)]
        result = cross_validate(features, configs, curves=False, **options)
        board = [{"params": s.params.to_dict(), "mean_valid": s.mean_valid, "std_valid": s.std_valid,
                  "valid": s.valid, "failed_epoch": s.failed_epoch} for s in result.ranked()]
        swept = list(grid)
    else:
        board = search(features, base, space, grid, trials=trials, batch=batch, target=ctx.target.name,
                       storage=ctx.workspace.reports / "search.sqlite3", metric=features.spec.scorer, **options)
        swept = [*space, *grid]
    metric = features.spec.scorer.name
    run_dir = reports.new_run_dir(ctx.workspace, ctx.target.name, "sweep")
    best = board[0] if board else {"params": base.to_dict(), "mean_valid": float("nan")}
    picture = plots.sweep_png(board, swept, run_dir / "sweep.png", metric)
    report = {"run": run_dir.name, "target": ctx.target.name, "command": "sweep", "metric": metric,
              "params": applicable_params({**ctx.params, **best["params"], "ensemble": []}, features.spec.task),
              "grid": swept, "search": "grid" if space is None else "tpe", "best_mean_valid": best["mean_valid"],
              "leaderboard": board, "folds": ctx.params["folds"], "seconds": time.perf_counter() - started,
              "device": str(device), "backend": ctx.backend.name, "created": reports.now(),
              "plots": [picture.name]}
    if save and not math.isnan(best["mean_valid"]):
        chosen = {k: best["params"][k] for k in swept}
        report["saved"] = str(params_file.save(ctx.workspace, ctx.target.name, chosen))
    reports.save_report(run_dir, report, ctx.workspace)
    return report


# What each body calls into, beyond its own module: editing any of it makes the stage stale.
_TRAINING = ("pipeline.folds", "pipeline.metrics", "pipeline.tabular.cv", "pipeline.tabular.members",
             "pipeline.tabular.ensemble", "pipeline.tabular.trainer", "pipeline.tabular.optim",
             "pipeline.tabular.stacked", "pipeline.tabular.features", "pipeline.checkpoints", "pipeline.devices")
STAGES = (
    Stage("download", (), (), ("pipeline.hub", "pipeline.targets"), download),
    Stage("preprocess", ("download",), FEATURE_KEYS,
          ("pipeline.tabular.tables", "pipeline.tabular.features", "pipeline.metrics", "pipeline.checkpoints"),
          preprocess),
    Stage("cv", ("preprocess",), RECIPE_KEYS + CV_KEYS, _TRAINING + ("pipeline.plots", "pipeline.reports"), cv),
    Stage("train", ("preprocess", "cv"), RECIPE_KEYS + ("seed",), _TRAINING + ("pipeline.tabular.tables",), train),
    Stage("submit", ("preprocess", "train"), (), _TRAINING + ("pipeline.submissions",), submit),
)
