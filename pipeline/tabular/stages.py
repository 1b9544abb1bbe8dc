"""A tabular target's stages: download -> preprocess -> cv, preprocess -> train -> submit.

Each body reads what its upstream stages wrote, writes its outputs atomically and returns them
with a summary (the report of ``cv``); :mod:`pipeline.make` decides when it runs. The recipe
they train is ``ctx.config`` (:class:`~pipeline.tabular.recipe.Recipe`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline import checkpoints, reports
from pipeline.devices import resolve_device
from pipeline.errors import DataError, TrainingError
from pipeline.make import Context, Stage, recorded
from pipeline.submissions import like_sample, write_copies
from pipeline.tabular import runs
from pipeline.tabular.budget import FINAL_FIT, Budget
from pipeline.tabular.cv import cross_validate_recipe
from pipeline.tabular.features import Features, build_features
from pipeline.tabular.infold import InFold
from pipeline.tabular.members import load_fitted
from pipeline.tabular.model import TrainedModel, bagged, fit_final
from pipeline.tabular.recipe import FEATURE_KEYS
from pipeline.tabular.report import cv_report
from pipeline.tabular.tables import load_tables, read_csv, read_test

log = logging.getLogger(__name__)

FEATURES_FORMAT = "pipeline.features/2"  # /1 had no feature builder
OOF_FORMAT = "pipeline.oof/2"  # /1 had no kept members
FOLDS_FORMAT = "pipeline.folds/1"


def features_path(ctx: Context) -> Path:
    return ctx.workspace.data / ctx.target.name / "features.pt"


def model_path(ctx: Context) -> Path:
    return ctx.workspace.models / f"{ctx.target.name}.pt"


def _oof_path(ctx: Context) -> Path:
    return ctx.workspace.data / ctx.target.name / "oof.pt"


def _folds_path(ctx: Context) -> Path:
    """final = "folds": the CV's fold models and their in-fold encoders, which ``train`` takes as they are."""
    return ctx.workspace.data / ctx.target.name / "folds.pt"


def download(ctx: Context) -> tuple[list[Path], dict]:
    paths = ctx.target.fetch(ctx.workspace.data, ctx.mirrors)
    return paths, {"files": [ctx.rel(p) for p in paths]}


def preprocess(ctx: Context) -> tuple[list[Path], dict]:
    tables = load_tables(*ctx.target.table_paths(ctx.workspace.data), ctx.target.spec)
    features = build_features(tables, ctx.config.features)
    path = checkpoints.save(features_path(ctx), FEATURES_FORMAT, features.to_state())
    return [path], {"rows": len(features.X), "test_rows": len(features.X_test), "features": len(features.names),
                    "columns": features.columns}


def load_features(ctx: Context) -> Features:
    path, remake = features_path(ctx), f"pipeline preprocess {ctx.target.name}"
    state = checkpoints.load(path, FEATURES_FORMAT, "features", remake)
    with checkpoints.restoring(path, remake):
        return Features.from_state({k: v for k, v in state.items() if k != "format"})


def cv(ctx: Context) -> tuple[list[Path], dict]:
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    recipe, budget = ctx.config, _budget(ctx, "cv")
    result, seconds = cross_validate_recipe(features, recipe, device=device, budget=budget,
                                            progress=ctx.progress(f"cv {ctx.target.name}"), backend=ctx.backend)
    run_dir = reports.new_run_dir(ctx.workspace, ctx.target.name, "cv")
    report = cv_report(run_dir, ctx.target.name, features, recipe, result, seconds, device)
    if budget is not None:
        report["time_limit"] = budget.report(recipe.time_limit)
    if result.score.failed:
        bad = [f"fold {i + 1} at epoch {e}" for i, e in enumerate(result.score.failed_epoch) if e]
        log.warning("training diverged (non-finite loss): %s; lower lr", ", ".join(bad))
    oof = checkpoints.save(_oof_path(ctx), OOF_FORMAT, {
        "members": [m.label for m in recipe.every_member], "kept": result.kept, "predictions": result.oof,
        "weights": result.weights, "budgets": result.budgets, "seeds": result.seeds,
        "diverged": [m.label for m in result.members if m.failed]})
    kept = runs.write(run_dir / "oof.csv", features.spec.id, features.train_ids or list(range(len(features.y))),
                      result.blend_oof, runs.columns(features.spec, features.classes), result.fold_of)
    path = reports.save_report(run_dir, report, ctx.workspace)
    pictures = [run_dir / name for name in report["plots"]]
    folds = [] if recipe.final != "folds" else [checkpoints.save(_folds_path(ctx), FOLDS_FORMAT, {
        "members": [[f.state() for f in rounds] for rounds in result.fitted],
        "encoders": None if result.encoders is None else result.encoders.state()})]
    return [path, run_dir / "report.md", run_dir / "report.html", *pictures, oof, kept, *folds], report


def train(ctx: Context) -> tuple[list[Path], dict]:
    """Every member on every row, with the blend weights and training lengths of its CV."""
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    recipe, remake, budget = ctx.config, f"pipeline cv {ctx.target.name}", _budget(ctx, "train")
    oof = checkpoints.load(_oof_path(ctx), OOF_FORMAT, "out-of-fold", remake)
    with checkpoints.restoring(_oof_path(ctx), remake):
        every = recipe.every_member
        if oof["members"] != [m.label for m in every]:
            raise ValueError(f"members {oof['members']} are not the recipe's")
        members = [every[i] for i in oof["kept"]]
        level1 = sum(i < len(recipe.members) for i in oof["kept"])
        weights, budgets, diverged = list(oof["weights"]), list(oof["budgets"]), list(oof["diverged"])
        level1_oof = oof["predictions"][:level1]
        recipe = replace(recipe, seeds=oof.get("seeds", 1 if recipe.seeds == "auto" else recipe.seeds))
    if diverged:  # whatever its weight: the recipe as asked for does not train
        raise TrainingError(f"training diverged (non-finite loss) in the CV of {', '.join(diverged)}; "
                            "no model was saved; lower lr")
    if recipe.final == "folds":
        model, train_score = _bag(ctx, features, weights, device)
    else:
        model, train_score = fit_final(features, recipe, members, weights, budgets, device=device, budget=budget,
                                       progress=ctx.progress(f"train {ctx.target.name}"), level1=level1,
                                       oof=level1_oof)
    path = model.save(model_path(ctx), target=ctx.target.name, params=ctx.params, features=features.names)
    summary = {"model": ctx.rel(path), "train": train_score, "seconds": sum(m.report.seconds for m in model.members),
               "device": str(device), "weights": model.weights}
    if budget is not None:
        summary["time_limit"] = budget.report(recipe.time_limit)
    return [path], summary


def _bag(ctx: Context, features: Features, weights: list[float], device: torch.device) -> tuple[TrainedModel, float]:
    """final = "folds": the model of the CV's fold models (see :func:`pipeline.tabular.model.bagged`);
    those of members the blend gives no weight are not loaded."""
    path, remake = _folds_path(ctx), f"pipeline cv {ctx.target.name}"
    state = checkpoints.load(path, FOLDS_FORMAT, "fold models", remake)
    with checkpoints.restoring(path, remake):
        metric = features.spec.scorer
        fitted = [[load_fitted(f, metric, device) for f in rounds] if weight > 0 else []
                  for rounds, weight in zip(state["members"], weights)]
        encoders = None if state["encoders"] is None else InFold.from_state(state["encoders"])
    return bagged(features, fitted, weights, encoders, device)


def _budget(ctx: Context, stage: str) -> Budget | None:
    """A stage's share of the command's time limit: all that is left, but for a CV that a final
    fit follows, which keeps FINAL_FIT of it for that (a recipe whose fold models are final
    fits nothing after its CV)."""
    if ctx.deadline is None:
        return None
    left = max(0.0, ctx.deadline - time.monotonic())
    keep = FINAL_FIT if stage == "cv" and ctx.until != "cv" and ctx.config.final == "refit" else 0.0
    return Budget(time.monotonic() + left * (1 - keep))


def load_model(ctx: Context, features: Features, device: torch.device) -> TrainedModel:
    model, state = TrainedModel.load(model_path(ctx), features.spec.scorer, device, f"pipeline train {ctx.target.name}")
    if state["features"] != features.names:
        raise DataError(f"{model_path(ctx)} was trained on other features; run `pipeline train {ctx.target.name}`")
    return model


def submit(ctx: Context) -> tuple[list[Path], dict]:
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    model = load_model(ctx, features, device)
    predictions = model.predict(model.test_inputs(features, device))
    frame, checks = submission(features, predictions, sample=ctx.target.sample_path(ctx.workspace.data))
    outs, summary = write_copies(ctx.workspace.submissions / f"{ctx.section}.csv", ctx.out, frame, **checks)
    run_dir = _cv_run_dir(ctx)
    if run_dir is not None:  # beside the out-of-fold predictions of the CV the model was trained from
        outs.append(runs.write(run_dir / "test.csv", features.spec.id, features.test_ids, predictions,
                               runs.columns(features.spec, features.classes)))
    return outs, summary


def _cv_run_dir(ctx: Context) -> Path | None:
    """The folder of the CV run whose weights and training lengths the final model took."""
    report = next((p for p in recorded(ctx, "cv") if p.name == "report.json"), None)
    return report.parent if report is not None and report.parent.is_dir() else None


def predict_file(ctx: Context, test: Path) -> dict:
    """A submission for another test file with the training table's columns, from the saved
    model (no training): written to ``ctx.out``, else beside the workspace's own."""
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    model = load_model(ctx, features, device)
    ids, frame = read_test(test, features.spec, model.builder.source)
    predictions = model.predict(model.inputs(frame, test, device))
    submission_frame, checks = submission(features, predictions, ids)
    out = ctx.out or ctx.workspace.submissions / f"{ctx.section}-{Path(test).stem}.csv"
    return write_copies(out, None, submission_frame, **checks)[1]


def submission(features: Features, predictions, ids: list | None = None, sample: Path | None = None):
    """The submission frame of ``predictions`` for the test ids (or ``ids``), in the format of
    the ``sample`` submission if there is one, and its checks."""
    spec, ids = features.spec, features.test_ids if ids is None else ids
    frame, checks = spec.scorer.submits.frame({spec.id: ids}, spec.label, predictions, features.classes, spec.scorer)
    checks = dict(checks, id_column=spec.id, expected_ids=ids)
    return (frame, checks) if sample is None else like_sample(frame, checks, read_csv(sample), str(sample))


def blend_runs(ctx: Context, run_dirs: list[Path], how: str) -> dict:
    """Runs of this target blended on their out-of-fold predictions (honestly scored) and their
    test predictions blended with the same weights, as a checked submission at ``ctx.out``."""
    features = load_features(ctx)
    spec = features.spec
    done = runs.blend_runs(run_dirs, features.y, spec.scorer, spec.id, runs.columns(spec, features.classes), how,
                           ctx.target.name)
    frame, checks = submission(features, done["test"].numpy(), done["test_ids"],
                               sample=ctx.target.sample_path(ctx.workspace.data))
    out = ctx.out or ctx.workspace.submissions / f"{ctx.target.name}-blend.csv"
    write_copies(out, None, frame, **checks)
    folds = [f"fold {k + 1}" for k in range(len(done["blend"]))]
    rows = [{"run": d.name, "weight": w, "mean valid": float(np.mean(s)), **dict(zip(folds, s))}
            for d, w, s in zip(run_dirs, done["weights"], done["runs"])]
    rows.append({"run": "blend (weights fit without the scored fold)", "weight": "",
                 "mean valid": float(np.mean(done["blend"])), **dict(zip(folds, done["blend"]))})
    return {"metric": spec.scorer.name, "blend": float(np.mean(done["blend"])), "submission": str(out),
            "rows": rows, "columns": ["run", "weight", "mean valid", *folds]}


def join_submissions(workspace, several, out: Path | None) -> dict:
    """The submissions of a competition's label columns (each column's target submitted) joined
    into one, in the sample's format when there is one (a ranked metric's several rows per id are
    refused when such a target is declared)."""
    spec, kind = several.whole.spec, several.whole.spec.scorer.submits
    frames = [read_csv(workspace.submissions / f"{part.name}.csv") for part in several.parts]
    ids = frames[0][spec.id]
    if not all(f[spec.id].equals(ids) for f in frames):
        raise DataError(f"the submissions of {', '.join(p.name for p in several.parts)} hold different ids")
    frame = pd.concat([frames[0][[spec.id]], *[f.drop(columns=spec.id) for f in frames]], axis=1)
    labels = [c for c in frame.columns if c != spec.id]
    checks = dict(id_column=spec.id, label_column=labels, expected_ids=ids.tolist(),
                  numeric=kind.numeric)
    sample = several.sample_path(workspace.data)
    if sample is not None:
        frame, checks = like_sample(frame, checks, read_csv(sample), str(sample))
    return write_copies(workspace.submissions / f"{several.name}.csv", out, frame, **checks)[1]


def joined_scores(several, reports: list[dict]) -> dict:
    """Each label column's CV score and their mean."""
    scores = {part.spec.label: report["mean_valid"] for part, report in zip(several.parts, reports)}
    return {"target": several.name, "metric": reports[0]["metric"], **scores,
            "mean_valid": float(np.mean(list(scores.values()))),
            "reports": [str(r.run_dir / "report.html") for r in reports],
            "folds": [fold for r in reports for fold in r["folds"]]}


def _cv_params(ctx: Context) -> dict:
    """The recipe's params but the features' (their file is the stage's input)."""
    return {k: v for k, v in ctx.params.items() if k not in FEATURE_KEYS}


STAGES = (
    Stage("download", (), lambda ctx: {}, download),
    Stage("preprocess", ("download",), lambda ctx: asdict(ctx.config.features), preprocess),
    Stage("cv", ("preprocess",), _cv_params, cv),
    Stage("train", ("preprocess", "cv"), _cv_params, train),
    Stage("submit", ("preprocess", "train"), lambda ctx: {}, submit),
)
