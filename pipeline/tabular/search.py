"""Search beyond grids: Optuna's TPE sampler proposes configs a batch at a time (ask and tell),
and each batch trains as one stacked model with all its folds, here or as Ray tasks.

The study lives in the workspace (``reports/search.sqlite3``, Optuna's SQLite storage), named
by the target and the searched space, so running the same search again resumes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

from pipeline.errors import ParamError, UsageError
from pipeline.progress import Progress
from pipeline.tabular.cv import FoldScores, cross_validate
from pipeline.tabular.features import Features
from pipeline.tabular.recipe import FoldParams
from pipeline.tabular.trainer import TrainParams

RANGE = re.compile(r"^\s*([\w-]+)\s*=\s*(\S+?)\s*\.\.\s*([^:\s]+)\s*(?::\s*(log))?\s*$")


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ParamError("search", "tpe", "needs Optuna and Ray: pip install -e \".[scale]\"") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def parse_ranges(items: list[str] | tuple[str, ...], defaults: dict, sweepable) -> dict:
    """``["lr=1e-4..1e-1:log", "epochs=10..50"]`` -> Optuna distributions, typed by the param's
    default (an int param gets an integer range)."""
    optuna = _optuna()
    space = {}
    for item in items:
        match = RANGE.match(item)
        if not match:
            raise UsageError(f"range {item!r}: write NAME=LOW..HIGH or NAME=LOW..HIGH:log (e.g. lr=1e-4..1e-1:log)")
        name, low, high, log = match.groups()
        key = name.replace("-", "_")
        if key not in sweepable or isinstance(defaults.get(key), (bool, str, list, tuple)):
            numeric = sorted(k for k in sweepable if isinstance(defaults.get(k), (int, float))
                             and not isinstance(defaults.get(k), bool))
            raise UsageError(f"range {item!r}: {name!r} is not a numeric param (searchable: {', '.join(numeric)})")
        kind = int if isinstance(defaults[key], int) else float
        try:
            low_value, high_value = kind(low), kind(high)
        except ValueError:
            raise UsageError(f"range {item!r}: {low!r} or {high!r} is not a valid {key}") from None
        if not low_value < high_value or (log and low_value <= 0):
            raise UsageError(f"range {item!r}: need LOW < HIGH (and LOW > 0 on a log scale)")
        distribution = optuna.distributions.IntDistribution if kind is int else optuna.distributions.FloatDistribution
        space[key] = distribution(low_value, high_value, log=bool(log))
    return space


def _choice(value):
    """A grid value as Optuna stores a category: widths [128, 64] as "128x64"."""
    return "x".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _param(key: str, value):
    return [int(w) for w in value.split("x")] if key == "hidden" and isinstance(value, str) else value


def search(features: Features, base: TrainParams, space: dict, grid: dict, folds: FoldParams, *, trials: int,
           batch: int, storage: Path, target: str, device, backend, progress: Progress = Progress()) -> list[dict]:
    """Run ``trials`` more trials of the study of ``space`` (ranges) and ``grid`` (categories),
    ``batch`` trials per stacked model; every finished trial of the study, best first."""
    optuna = _optuna()
    space = {**space, **{k: optuna.distributions.CategoricalDistribution([_choice(v) for v in values])
                         for k, values in grid.items()}}
    if not space:
        raise ParamError("search", "tpe", "needs ranges (or a grid) to search")
    # the study is named without the searched params' current values: `--save` writes the best
    # of them into params.toml, and the next run of the same search must find the same study
    fixed = {k: v for k, v in base.to_dict().items() if k not in space}
    table = hashlib.sha1(features.X.cpu().numpy().tobytes()).hexdigest()[:10]  # other features: another study
    described = json.dumps({"base": fixed, "features": table, "space": {k: repr(v) for k, v in sorted(space.items())},
                            "folds": folds.folds, "split": folds.split, "seed": folds.seed}, sort_keys=True)
    metric = features.spec.scorer
    name = f"{target}-{hashlib.sha1(described.encode()).hexdigest()[:10]}"
    storage.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{storage}", load_if_exists=True,
                                direction="maximize" if metric.higher_is_better else "minimize")
    # seeded past the trials it has: a resumed study proposes new configs, not the first run's again;
    # constant_liar spreads a batch's proposals, which are asked before any of them is told
    study.sampler = optuna.samplers.TPESampler(seed=folds.seed + len(study.trials), constant_liar=True)
    for start in range(0, trials, batch):
        asked = [study.ask(space) for _ in range(min(batch, trials - start))]
        configs = [base.with_(**{k: _param(k, v) for k, v in t.params.items()}) for t in asked]
        try:
            result = cross_validate(features, configs, folds, device=device, curves=False, progress=progress,
                                    backend=backend)
        except BaseException:
            for t in asked:
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            raise
        for t, score in zip(asked, result.scores):
            _tell(study, optuna, t, score)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    done.sort(key=lambda t: metric.sort_key(t.value))
    return [{"params": {**base.to_dict(), **{k: _param(k, v) for k, v in t.params.items()}}, "trial": t.number,
             "mean_valid": t.value, "std_valid": t.user_attrs["std_valid"], "valid": t.user_attrs["valid"],
             "failed_epoch": [0] * len(t.user_attrs["valid"])} for t in done]


def _tell(study, optuna, trial, score: FoldScores) -> None:
    if score.failed or not math.isfinite(score.mean_valid):
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    trial.set_user_attr("valid", score.valid)
    trial.set_user_attr("std_valid", score.std_valid)
    study.tell(trial, score.mean_valid)
