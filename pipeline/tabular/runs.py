"""What a run keeps of its predictions, and blends of runs (``pipeline blend``).

A CV run writes ``oof.csv`` in its folder: each training row's id, the fold that validated it
(-1: none, the first block of a time split) and the blend's prediction of it by the models that
did not train on it; ``pipeline submit`` adds ``test.csv``, the final model's test predictions,
to the folder of the CV it trained from. Predictions are values (a regression's, one column
named as the label) or class probabilities (a column per class).

A blend of runs is fit like a recipe's blend of members, on the runs' out-of-fold predictions,
and scored as honestly: the weights that blend fold k's rows are fit on the other folds only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.errors import DataError, UsageError
from pipeline.metrics import Metric
from pipeline.tabular.ensemble import blend, fit_weights
from pipeline.workspace import atomic_path

FOLD = "fold"


def columns(spec, classes: list) -> list[str]:
    """The prediction columns: the label's for values, one per class for probabilities."""
    return [spec.label] if spec.scorer.task.continuous else [str(c) for c in classes]


def write(path: Path, id_column: str, ids: list, predictions, names: list[str],
          fold_of: torch.Tensor | None = None) -> Path:
    """``predictions``: (rows, outputs), a CPU tensor or an array."""
    frame = pd.DataFrame({id_column: ids})
    if fold_of is not None:
        frame[FOLD] = fold_of.numpy()
    frame = pd.concat([frame, pd.DataFrame(np.asarray(predictions, dtype=np.float64), columns=names)], axis=1)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _read(run_dir: Path, name: str, remake: str) -> pd.DataFrame:
    path = run_dir / name
    if not path.exists():
        raise DataError(f"run {run_dir.name} has no {name}: {remake}")
    return pd.read_csv(path)


def blend_runs(run_dirs: list[Path], y: torch.Tensor, metric: Metric, id_column: str, names: list[str],
               how: str, target: str) -> dict:
    """Each run's fold scores, the honest blend's, the blend weights (fit on every validated row)
    and the blended test predictions."""
    oofs = [_read(d, "oof.csv", f"run `pipeline cv {target}` again to write it") for d in run_dirs]
    tests = [_read(d, "test.csv", f"run `pipeline submit {target}` after that CV to write it") for d in run_dirs]
    _check_same_rows(run_dirs, oofs, tests, id_column)
    fold_of = torch.tensor(oofs[0][FOLD].to_numpy())
    predictions = torch.stack([torch.from_numpy(o[names].to_numpy()) for o in oofs]).float()
    folds = int(fold_of.max()) + 1
    run_scores = [[float(metric.score(metric.task.scored(p[fold_of == k]), y[fold_of == k])) for k in range(folds)]
                  for p in predictions]
    blended = []
    for k in range(folds):
        others = (fold_of >= 0) & (fold_of != k)
        weights = fit_weights(how, predictions[:, others], y[others], metric)
        scored = blend(list(predictions[:, fold_of == k]), metric, weights)
        blended.append(float(metric.score(metric.task.scored(scored), y[fold_of == k])))
    weights = fit_weights(how, predictions[:, fold_of >= 0], y[fold_of >= 0], metric)
    test = blend([torch.from_numpy(t[names].to_numpy()).float() for t in tests], metric, weights)
    return {"runs": run_scores, "blend": blended, "weights": weights, "test": test,
            "test_ids": tests[0][id_column].tolist()}


def _check_same_rows(run_dirs: list[Path], oofs: list[pd.DataFrame], tests: list[pd.DataFrame], id_column: str):
    if len(run_dirs) < 2:
        raise UsageError("blend takes two runs or more")
    first = run_dirs[0].name
    for run_dir, oof, test in zip(run_dirs[1:], oofs[1:], tests[1:]):
        if not oof[id_column].equals(oofs[0][id_column]) or not test[id_column].equals(tests[0][id_column]):
            raise DataError(f"runs {first} and {run_dir.name} predict different rows; blend runs of one target")
        if not oof[FOLD].equals(oofs[0][FOLD]):
            raise DataError(f"runs {first} and {run_dir.name} were cross-validated on different folds; blend runs "
                            "of the same --folds, --split and --seed")
