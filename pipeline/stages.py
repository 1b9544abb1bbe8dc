"""Make-style stages: each declares its upstream stages, params and code; each records what it
read and wrote in ``pipeline.lock``, so that a later run skips it while nothing it used changed.

A stage is up to date when its recorded outputs exist with the recorded hashes and its inputs
(by SHA-1), params and code are what they were when it last ran; otherwise ``status`` says
which one changed, like ``dvc status``. Every output is written atomically, and the lock record
is written after the outputs, so a stage killed midway is simply stale the next time.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from pipeline import classifiers, hub, plots, reports
from pipeline.devices import resolve_device
from pipeline.errors import DataError, PipelineError, TrainingError, UsageError
from pipeline.folds import (cross_validate, cross_validate_recipe, expand_grid, fit_final, fold_rows,
                            predict_blend, recipe_members)
from pipeline.images import CACHE_NAME, CLASS_NAMES, load_fashion
from pipeline.models import StackedRegressor
from pipeline.submissions import write_submission
from pipeline.tabular import FeatureParams, Features, build_features, load_tables
from pipeline.targets import ImageTarget, TabularTarget, load_params_file, read_toml
from pipeline.trainer import TrainParams
from pipeline.workspace import Workspace, atomic_path, write_json, write_text

log = logging.getLogger(__name__)

FEATURE_KEYS = ("fit_on", "log_skewed", "clip_quantile")
TRAIN_KEYS = tuple(TrainParams.__dataclass_fields__)
RECIPE_KEYS = TRAIN_KEYS + ("ensemble", "seeds", "recipe")
CV_KEYS = ("folds", "split", "seed")
CHECKPOINT_FORMAT = "pipeline.recipe/1"


@dataclass
class Context:
    """What every stage gets: where to work, which target, the resolved params, how to report."""

    workspace: Workspace
    target: TabularTarget | ImageTarget
    params: dict
    mirrors: list[str] = field(default_factory=list)
    device: str = "auto"
    progress: Callable[[str], Callable[[int, int], None] | None] = lambda desc: None
    out: Path | None = None  # submit: where to copy the submission as well

    @property
    def section(self) -> str:
        """The lock's key: one per target, and per model for image targets (one file each)."""
        return self.target.name if self.target.kind == "tabular" else f"{self.target.name}/{self.params['model']}"

    def rel(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.workspace.root))
        except ValueError:
            return str(path.resolve())


@dataclass(frozen=True)
class Stage:
    name: str
    after: tuple[str, ...]  # upstream stages: their outputs are this stage's inputs
    params: tuple[str, ...]
    modules: tuple[str, ...]  # the code whose change makes the stage stale
    run: Callable[[Context], tuple[list[Path], dict]]  # -> outputs, summary for the caller


def resolve_params(target, workspace: Workspace, flags: dict) -> dict:
    """Target defaults, a preset recipe, ``params.toml``'s ``[target]`` table, then flags."""
    params = dict(target.defaults)
    from_file = load_params_file(workspace, target.name)
    given = {**from_file, **{k: v for k, v in flags.items() if v is not None}}
    if target.kind == "tabular":
        unknown = sorted(set(from_file) - set(params) - {"recipe"})
        if unknown:
            raise UsageError(f"{workspace.params_file}: [{target.name}] has unknown param {unknown[0]!r} "
                             f"(known: {', '.join(sorted(params))})")
        recipe = given.get("recipe") or (None if "model" in given else target.default_preset)
        if recipe and recipe not in target.presets:
            raise UsageError(f"recipe {recipe!r} is not one of {', '.join(target.presets) or 'none'} "
                             f"for target {target.name}")
        params.update(target.presets.get(recipe, {}))
        params["recipe"] = recipe or ""
    params.update(given)
    return params


# ----------------------------------------------------------------------------- tabular stages

def _features_path(ctx: Context) -> Path:
    return ctx.workspace.data / ctx.target.name / "features.pt"


def _model_path(ctx: Context) -> Path:
    suffix = f"-{ctx.params['model']}" if ctx.target.kind == "image" else ""
    return ctx.workspace.models / f"{ctx.target.name}{suffix}.pt"


def _download(ctx: Context) -> tuple[list[Path], dict]:
    paths = [hub.download(f, ctx.workspace.data, ctx.mirrors) for f in ctx.target.hub_files]
    if ctx.target.kind == "tabular":
        paths += [p for p in (ctx.target.train, ctx.target.test) if isinstance(p, Path)]
    return paths, {"files": [ctx.rel(p) for p in paths]}


def _table_paths(ctx: Context) -> tuple[Path, Path]:
    t = ctx.target
    return tuple(p if isinstance(p, Path) else ctx.workspace.data / p.path for p in (t.train, t.test))


def _preprocess(ctx: Context) -> tuple[list[Path], dict]:
    tables = load_tables(*_table_paths(ctx), ctx.target.spec)
    features = build_features(tables, FeatureParams(**{k: ctx.params[k] for k in FEATURE_KEYS}))
    path = _features_path(ctx)
    with atomic_path(path) as tmp:
        torch.save(features.to_state(), tmp)
    return [path], {"rows": len(features.X), "test_rows": len(features.X_test), "columns": len(features.names)}


def load_features(ctx: Context) -> Features:
    path = _features_path(ctx)
    try:
        return Features.from_state(torch.load(path, weights_only=True))
    except FileNotFoundError:
        raise DataError(f"{path} is missing; run `pipeline preprocess {ctx.target.name}`") from None


def train_params(params: dict) -> TrainParams:
    return TrainParams.from_dict({k: params[k] for k in TRAIN_KEYS})


def members(params: dict) -> list:
    """The recipe's models: the base params alone, or one per ``ensemble`` table."""
    return recipe_members(train_params(params), params.get("ensemble") or [])


def _cv(ctx: Context) -> tuple[list[Path], dict]:
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    recipe = members(ctx.params)
    folds, split = ctx.params["folds"], ctx.params["split"]
    result, seconds = cross_validate_recipe(
        features, recipe, seeds=int(ctx.params["seeds"]), folds=folds, split=split, seed=ctx.params["seed"],
        device=device, on_epoch=ctx.progress(f"cv {ctx.target.name}"))
    score = result.score
    labels = ([f"fold {i + 1}" for i in range(folds)] if len(recipe) == 1 and int(ctx.params["seeds"]) == 1
              else [f"{m.model} {i + 1} (fold mean)" for i, m in enumerate(recipe) if isinstance(m, TrainParams)])
    run_dir = reports.new_run_dir(ctx.workspace, ctx.target.name, "cv")
    plot = plots.learning_curves_png(
        [{"label": label, "train": tr, "valid": va}
         for label, tr, va in zip(labels, score.train_curves, score.valid_curves)],
        run_dir / "curves.png", ylabel=features.spec.metric, log_scale=features.spec.metric != "accuracy",
        title=f"{ctx.target.name}: {' + '.join(m.model for m in recipe)}, {folds}-fold {split}")
    report = {
        "run": run_dir.name, "target": ctx.target.name, "kind": "cv", "metric": features.spec.metric,
        "params": _public_params(ctx), "folds": [
            {"train": tr, "valid": va, "failed_epoch": fe}
            for tr, va, fe in zip(score.train, score.valid, score.failed_epoch)],
        "mean_valid": score.mean_valid, "std_valid": score.std_valid,
        "seconds": seconds, "device": str(device), "created": reports.now(),
        "plots": [plot.name],
    }
    if len(result.members) > 1:
        report["members"] = [{"model": m.params.model, "mean_valid": m.mean_valid, "std_valid": m.std_valid,
                              "valid": m.valid} for m in result.members]
    if score.failed:
        bad = [f"fold {i + 1} at epoch {e}" for i, e in enumerate(score.failed_epoch) if e]
        log.warning("training diverged (non-finite loss): %s; lower --lr", ", ".join(bad))
    path = reports.save_report(run_dir, report)
    return [path, run_dir / "report.md", plot], report


def _train(ctx: Context) -> tuple[list[Path], dict]:
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    recipe = members(ctx.params)
    results = fit_final(features, recipe, seeds=int(ctx.params["seeds"]), seed=ctx.params["seed"],
                        device=device, on_epoch=ctx.progress(f"train {ctx.target.name}"))
    saved = []
    for member, result in zip(recipe, results):
        if isinstance(result, torch.Tensor):  # a scikit-learn member: its test predictions
            if not torch.isfinite(result).all():
                raise TrainingError(f"ensemble member {member.model} predicted non-finite values; no model was saved")
            saved.append({"test_predictions": result})
            continue
        if result.failed_epoch.any():
            raise TrainingError(f"training diverged (non-finite loss) at epoch {result.failed_epoch.max()} "
                                f"({member.model}); no model was saved; lower --lr (now {member.lr})")
        saved.append(result.model.state({"configs": [c.to_dict() for c in result.configs]}))
    path = _model_path(ctx)
    state = {"format": CHECKPOINT_FORMAT, "target": ctx.target.name, "params": _public_params(ctx),
             "features": features.names, "metric": features.spec.metric, "members": saved}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    fitted = [r for r in results if not isinstance(r, torch.Tensor)]
    return [path], {"model": ctx.rel(path),
                    "train": float(np.mean([r.final_train.mean() for r in fitted])) if fitted else float("nan"),
                    "seconds": sum(r.seconds for r in fitted), "device": str(device)}


def run_sweep(ctx: Context, grid: dict[str, list], save: bool = True) -> dict:
    """Cross-validate every grid config over the current params; rank; save the best params."""
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    configs = expand_grid(train_params(ctx.params), grid)
    result = cross_validate(features, configs, folds=ctx.params["folds"], split=ctx.params["split"],
                            seed=ctx.params["seed"], device=device, curves=False,
                            on_epoch=ctx.progress(f"sweep {ctx.target.name} ({len(configs)} configs)"))
    run_dir = reports.new_run_dir(ctx.workspace, ctx.target.name, "sweep")
    board = [{"params": _plain_dict(s.params.to_dict()), "mean_valid": s.mean_valid, "std_valid": s.std_valid,
              "valid": s.valid, "failed_epoch": s.failed_epoch} for s in result.ranked()]
    best = board[0]
    report = {"run": run_dir.name, "target": ctx.target.name, "kind": "sweep", "metric": result.metric,
              "params": {**_public_params(ctx), **best["params"]}, "grid": list(grid),
              "best_mean_valid": best["mean_valid"], "leaderboard": board, "folds": result.folds,
              "seconds": result.seconds, "device": result.device, "created": reports.now()}
    if save and not math.isnan(best["mean_valid"]):
        chosen = {k: best["params"][k] for k in grid}
        report["saved"] = str(save_params(ctx.workspace, ctx.target.name, chosen))
    reports.save_report(run_dir, report)
    return report


def _plain_dict(values: dict) -> dict:
    return {k: _plain(v) for k, v in values.items()}


def save_params(workspace: Workspace, target: str, values: dict) -> Path:
    """Merge ``values`` into ``params.toml``'s ``[target]`` table, keeping everything else."""
    path = workspace.params_file
    tables = read_toml(path)
    tables.setdefault(target, {}).update(values)
    return write_text(path, _toml(tables))


def _toml(tables: dict) -> str:
    """A writer for params.toml's shape (tables of scalars and lists): tomllib only reads."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    lines = ["# Params per target; flags override them. `pipeline sweep` writes the best config here.", ""]
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def _load_checkpoint(path: Path):
    """``torch.load(weights_only=True)``, quiet: torch warns on foreign pickles before refusing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def load_model(path: Path, device: torch.device) -> tuple[list[tuple], dict]:
    """A saved tabular model; a tampered or foreign file is refused with a one-line error."""
    try:
        state = _load_checkpoint(path)
    except FileNotFoundError:
        raise DataError(f"{path} is missing; run `pipeline train` first") from None
    except Exception as exc:  # pickle errors, truncated zip, non-tensor objects: all mean "not ours"
        raise DataError(f"{path} is not a pipeline checkpoint ({type(exc).__name__}); "
                        "delete it and run `pipeline train` again") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path} is not a pipeline tabular checkpoint; delete it and run `pipeline train` again")
    try:
        models = [m["test_predictions"] if "test_predictions" in m else
                  (StackedRegressor.from_state(m, device), [TrainParams.from_dict(c) for c in m["configs"]])
                  for m in state["members"]]
        return models, state
    except (KeyError, TypeError, ValueError, PipelineError) as exc:
        raise DataError(f"{path} is damaged ({exc}); delete it and run `pipeline train` again") from None


def _submit(ctx: Context) -> tuple[list[Path], dict]:
    features = load_features(ctx)
    device = resolve_device(ctx.device)
    models, state = load_model(_model_path(ctx), device)
    if state["features"] != features.names:
        raise DataError(f"{_model_path(ctx)} was trained on other features; run `pipeline train {ctx.target.name}`")
    spec = features.spec
    predictions = predict_blend(models, features.X_test, spec.task, spec.metric)
    labels = ([features.classes[i] for i in predictions.argmax(1)] if spec.task == "classification"
              else predictions)
    frame = pd.DataFrame({spec.id: features.test_ids, spec.label: labels})
    checks = dict(id_column=spec.id, label_column=spec.label, expected_ids=features.test_ids,
                  positive=spec.metric == "log_rmse",
                  classes=features.classes if spec.task == "classification" else None)
    return _write_submissions(ctx, frame, checks)


def _write_submissions(ctx: Context, frame: pd.DataFrame, checks: dict) -> tuple[list[Path], dict]:
    """The workspace's copy (the stage's output) and, with ``--out``, the user's copy too."""
    path = write_submission(ctx.workspace.submissions / f"{ctx.section.replace('/', '-')}.csv", frame, **checks)
    if ctx.out:
        write_submission(ctx.out, frame, **checks)
    return [path], {"submission": str(ctx.out or path), "rows": len(frame)}


# ----------------------------------------------------------------------------- image stages

def _image_data(ctx: Context):
    return load_fashion(ctx.workspace.data)


def _image_preprocess(ctx: Context) -> tuple[list[Path], dict]:
    data = _image_data(ctx)
    return [ctx.workspace.data / "fashion-mnist" / CACHE_NAME], {"train": len(data.train_labels),
                                                                  "test": len(data.test_labels)}


def classifier_params(params: dict) -> dict:
    """The classifier's own params: everything but the target-level keys."""
    return {k: v for k, v in params.items() if k not in ("model", "valid_fraction", "folds", "seed")}


def _image_train(ctx: Context) -> tuple[list[Path], dict]:
    data = _image_data(ctx)
    device = resolve_device(ctx.device)
    name, seed = ctx.params["model"], int(ctx.params["seed"])
    if name not in classifiers.DEFAULTS:
        raise UsageError(f"--model {name!r} is not one of {', '.join(classifiers.DEFAULTS)} for {ctx.target.name}")
    x, y = data.train_images, data.train_labels.long()
    generator = torch.Generator().manual_seed(seed)
    folds = int(ctx.params["folds"])
    if folds >= 2:
        splits = fold_rows(y, folds, "shuffled", seed, stratify=True)
    else:
        order = torch.randperm(len(y), generator=generator)
        n_valid = int(round(len(y) * float(ctx.params["valid_fraction"])))
        splits = [(order[n_valid:], order[:n_valid])]
    started = time.perf_counter()
    histories, scores, model = [], [], None
    for i, (tr, va) in enumerate(splits):
        model, history = classifiers.fit_classifier(name, classifier_params(ctx.params), x[tr], y[tr],
                                        x[va] if len(va) else None, y[va] if len(va) else None,
                                        device=device, seed=seed + i)
        histories.append(history)
        if len(va):
            scores.append(classifiers.evaluate(model, x[va], y[va], device)["accuracy"])
    if folds >= 2:  # the K fold models were for scoring; the saved model trains on every row
        model, _ = classifiers.fit_classifier(name, classifier_params(ctx.params), x, y, device=device, seed=seed)
    path = _model_path(ctx)
    with atomic_path(path) as tmp:
        torch.save({"format": "pipeline.classifier/1", "model": name,
                    "params": {**classifiers.DEFAULTS[name], **classifier_params(ctx.params)},
                    "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                    "classes": list(CLASS_NAMES)}, tmp)
    run_dir = reports.new_run_dir(ctx.workspace, ctx.target.name, "train")
    plot = plots.learning_curves_png(
        [{"label": f"fold {i + 1}" if folds >= 2 else name,
          "train": [h["train_loss"] for h in hist],
          "valid": [h["valid_loss"] for h in hist] if hist and hist[0]["valid_loss"] is not None else None}
         for i, hist in enumerate(histories)],
        run_dir / "curves.png", ylabel="cross-entropy", title=f"{ctx.target.name}: {name}")
    report = {"run": run_dir.name, "target": ctx.target.name, "kind": "train", "metric": "accuracy",
              "params": _public_params(ctx), "history": histories,
              "folds": [{"train": h[-1]["train_accuracy"], "valid": s} for h, s in zip(histories, scores)],
              "seconds": time.perf_counter() - started, "device": str(device), "created": reports.now(),
              "plots": [plot.name]}
    if scores:
        report.update(mean_valid=float(np.mean(scores)), std_valid=float(np.std(scores)),
                      valid_accuracy=float(np.mean(scores)))
    reports.save_report(run_dir, report)
    return [path, run_dir / "report.json", plot], report


def load_classifier(path: Path, device: torch.device):
    try:
        state = _load_checkpoint(path)
    except FileNotFoundError:
        raise DataError(f"{path} is missing; run `pipeline train fashion --model {path.stem.split('-')[-1]}`") from None
    except Exception as exc:
        raise DataError(f"{path} is not a pipeline checkpoint ({type(exc).__name__}); "
                        "delete it and train again") from None
    if not isinstance(state, dict) or state.get("format") != "pipeline.classifier/1":
        raise DataError(f"{path} is not a pipeline classifier checkpoint; delete it and train again")
    own = {k: v for k, v in state["params"].items() if k in ("hidden", "dropout", "channels")}
    model = classifiers.build_classifier(state["model"], **own)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise DataError(f"{path} does not fit model {state['model']!r}: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval(), state


def _image_evaluate(ctx: Context) -> tuple[list[Path], dict]:
    started = time.perf_counter()
    data = _image_data(ctx)
    device = resolve_device(ctx.device)
    model, state = load_classifier(_model_path(ctx), device)
    result = classifiers.evaluate(model, data.test_images, data.test_labels.long(), device)
    run_dir = reports.new_run_dir(ctx.workspace, ctx.target.name, "evaluate")
    confusion = plots.confusion_matrix_png(result["confusion"], CLASS_NAMES, run_dir / "confusion.png",
                                           title=f"{state['model']}: test accuracy {result['accuracy']:.4f}")
    shown = torch.arange(18)
    predicted = classifiers.predict(model, data.test_images[shown], device).argmax(1).cpu()
    grid = plots.prediction_grid_png(data.test_images[shown], data.test_labels[shown], predicted,
                                     CLASS_NAMES, run_dir / "predictions.png")
    report = {"run": run_dir.name, "target": ctx.target.name, "kind": "evaluate", "metric": "accuracy",
              "params": {"model": state["model"], **state["params"]},
              "test_accuracy": result["accuracy"], "test_loss": result["loss"],
              "per_class": dict(zip(CLASS_NAMES, result["per_class"])), "confusion": result["confusion"],
              "seconds": time.perf_counter() - started, "device": str(device), "created": reports.now(),
              "plots": [confusion.name, grid.name]}
    path = reports.save_report(run_dir, report)
    return [path, confusion, grid], report


def _image_submit(ctx: Context) -> tuple[list[Path], dict]:
    data = _image_data(ctx)
    device = resolve_device(ctx.device)
    model, _ = load_classifier(_model_path(ctx), device)
    labels = classifiers.predict(model, data.test_images, device).argmax(1).cpu().numpy()
    ids = list(range(len(labels)))
    frame = pd.DataFrame({"Id": ids, "Label": labels})
    checks = dict(id_column="Id", label_column="Label", expected_ids=ids, classes=list(range(10)))
    return _write_submissions(ctx, frame, checks)


def _public_params(ctx: Context) -> dict:
    return {k: v for k, v in sorted(ctx.params.items())}


TABULAR_STAGES = (
    Stage("download", (), (), ("pipeline.hub",), _download),
    Stage("preprocess", ("download",), FEATURE_KEYS, ("pipeline.tabular",), _preprocess),
    Stage("cv", ("preprocess",), RECIPE_KEYS + CV_KEYS,
          ("pipeline.folds", "pipeline.trainer", "pipeline.models"), _cv),
    Stage("train", ("preprocess",), RECIPE_KEYS + ("seed",),
          ("pipeline.folds", "pipeline.trainer", "pipeline.models"), _train),
    Stage("submit", ("preprocess", "train"), (), ("pipeline.submissions",), _submit),
)
IMAGE_STAGES = (
    Stage("download", (), (), ("pipeline.hub",), _download),
    Stage("preprocess", ("download",), (), ("pipeline.images",), _image_preprocess),
    Stage("train", ("preprocess",), ("*",), ("pipeline.classifiers",), _image_train),
    Stage("evaluate", ("train",), ("model",), ("pipeline.classifiers",), _image_evaluate),
    Stage("submit", ("train",), ("model",), ("pipeline.submissions",), _image_submit),
)


def stages_of(target) -> tuple[Stage, ...]:
    return TABULAR_STAGES if target.kind == "tabular" else IMAGE_STAGES


def get_stage(target, name: str) -> Stage:
    for stage in stages_of(target):
        if stage.name == name:
            return stage
    raise UsageError(f"target {target.name} has no stage {name!r}; "
                     f"its stages: {', '.join(s.name for s in stages_of(target))}")


# ----------------------------------------------------------------------------- lock and status

def sha1_file(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def code_version(stage: Stage) -> str:
    digest = hashlib.sha1()
    for name in stage.modules:
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())
    return digest.hexdigest()[:12]


def stage_params(stage: Stage, ctx: Context) -> dict:
    keys = sorted(ctx.params) if stage.params == ("*",) else stage.params
    return {k: _plain(ctx.params[k]) for k in keys if k in ctx.params}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def read_lock(workspace: Workspace) -> dict:
    path = workspace.lock_file
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        log.warning("%s is unreadable; every stage will run again", path)
        return {}


def _inputs(stage: Stage, ctx: Context, lock: dict) -> dict:
    """The files upstream stages recorded as their outputs."""
    records = lock.get(ctx.section, {})
    files = {}
    for upstream in stage.after:
        files.update(records.get(upstream, {}).get("outs", {}))
    return files


def check(stage: Stage, ctx: Context, lock: dict, stale_upstream: set[str]) -> tuple[str, str]:
    """(state, reason): ``up to date``, ``stale`` or ``missing``."""
    record = lock.get(ctx.section, {}).get(stage.name)
    if not record:
        return "missing", "never run"
    for rel, digest in record["outs"].items():
        path = ctx.workspace.root / rel
        if not path.exists():
            return "missing", f"output {rel} is missing"
        if sha1_file(path) != digest:
            return "stale", f"output {rel} was changed"
    for upstream in stage.after:
        if upstream in stale_upstream:
            return "stale", f"upstream stage {upstream} is not up to date"
    now_inputs = _inputs(stage, ctx, lock)
    for rel in sorted(set(now_inputs) | set(record["deps"])):
        if now_inputs.get(rel) != record["deps"].get(rel):
            return "stale", f"input {rel} changed"
    params = stage_params(stage, ctx)
    for key in sorted(set(params) | set(record["params"])):
        if params.get(key) != record["params"].get(key):
            return "stale", f"param {key} changed: {record['params'].get(key)!r} -> {params.get(key)!r}"
    if code_version(stage) != record["code"]:
        return "stale", "code changed"
    return "up to date", ""


def status(ctx: Context, until: str | None = None) -> list[dict]:
    lock = read_lock(ctx.workspace)
    rows, not_ok = [], set()
    for stage in _upto(ctx.target, until):
        state, reason = check(stage, ctx, lock, not_ok)
        if state != "up to date":
            not_ok.add(stage.name)
        rows.append({"stage": stage.name, "state": state, "reason": reason})
    return rows


def _upto(target, until: str | None) -> tuple[Stage, ...]:
    """Every stage in declared order, through ``until``."""
    stages = stages_of(target)
    if until is None:
        return stages
    names = [s.name for s in stages]
    get_stage(target, until)
    return stages[: names.index(until) + 1]


def _needed(target, name: str) -> tuple[Stage, ...]:
    """``name`` and the stages it depends on (transitively), in declared order."""
    wanted, todo = set(), [name]
    while todo:
        stage = get_stage(target, todo.pop())
        if stage.name not in wanted:
            wanted.add(stage.name)
            todo.extend(stage.after)
    return tuple(s for s in stages_of(target) if s.name in wanted)


def execute(stage: Stage, ctx: Context) -> dict:
    """Run one stage and record it in the lock (after its outputs are in place)."""
    lock = read_lock(ctx.workspace)
    inputs = _inputs(stage, ctx, lock)
    started = time.perf_counter()
    outs, summary = stage.run(ctx)
    lock = read_lock(ctx.workspace)
    lock.setdefault(ctx.section, {})[stage.name] = {
        "deps": inputs, "params": stage_params(stage, ctx), "code": code_version(stage),
        "outs": {ctx.rel(p): sha1_file(p) for p in outs},
        "finished": reports.now(), "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(ctx.workspace.lock_file, lock)
    return summary


def make(ctx: Context, until: str, *, force: bool = False, always: bool = False, in_order: bool = False,
         report: Callable[[str, str], None] = lambda stage, what: None) -> dict:
    """Bring ``until`` and what it depends on up to date; ``always`` reruns ``until`` itself.

    ``in_order`` takes every stage declared before ``until`` instead (``pipeline run``).
    Returns the last stage's summary (empty when it was up to date and skipped).
    """
    summary: dict = {}
    for stage in (_upto if in_order else _needed)(ctx.target, until):
        # Upstream stages already ran (or were fresh), so their recorded outputs tell the truth.
        state, reason = check(stage, ctx, read_lock(ctx.workspace), set())
        last = stage.name == until
        if force or state != "up to date" or (always and last):
            report(stage.name, f"running ({reason or 'requested'})")
            summary = execute(stage, ctx)
        else:
            report(stage.name, "up to date, skipped")
            summary = {}
    return summary
