"""Kaggle submission CSVs, checked before they are written (and written atomically)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError, shown
from pipeline.workspace import atomic_path

log = logging.getLogger(__name__)

PROBABILITY_SUM_TOLERANCE = 1e-4  # float32 probabilities of a few classes sum to 1 within this


def check_submission(frame: pd.DataFrame, *, id_column: str, label_column: str | list[str], expected_ids: list,
                     positive: bool = False, non_negative: bool = False, classes: list | None = None,
                     probabilities: bool = False, numeric: bool = True) -> None:
    """Raise :class:`DataError` unless ``frame`` is exactly what the competition accepts.

    ``label_column`` is one column, or for multiclass probabilities one per class, or one per
    label of a competition with several (``numeric``: they hold numbers, not class labels)."""
    label_columns = [label_column] if isinstance(label_column, str) else list(label_column)
    if list(frame.columns) != [id_column, *label_columns]:
        raise DataError(f"submission header is {','.join(map(str, frame.columns))}; "
                        f"expected exactly {','.join([id_column, *label_columns])}")
    if len(frame) != len(expected_ids):
        raise DataError(f"submission has {len(frame)} rows; the test set has {len(expected_ids)}")
    ids = frame[id_column]
    if ids.duplicated().any():
        raise DataError(f"submission repeats {id_column} {shown(ids[ids.duplicated()].iloc[0])!r}")
    if list(ids) != list(expected_ids):
        raise DataError(f"submission {id_column}s differ from the test file's, in order or value")
    if not numeric:
        return
    if classes is not None:
        labels = frame[label_columns[0]]
        unknown = ~labels.isin(classes)
        if unknown.any():
            raise DataError(f"submission {label_columns[0]} {shown(labels[unknown].iloc[0])!r} is not a known class")
        return
    values = frame[label_columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(1)
    if bad.any():
        raise DataError(f"{bad.sum()} predictions are not finite (first: {id_column} {shown(ids[bad].iloc[0])!r}); "
                        "the model diverged, nothing was written — lower lr")
    if positive and (values <= 0).any():
        first = shown(ids[(values <= 0).any(1)].iloc[0])
        raise DataError(f"prediction for {id_column} {first!r} is not positive; the metric takes logs")
    if non_negative and (values < 0).any():
        first = shown(ids[(values < 0).any(1)].iloc[0])
        raise DataError(f"prediction for {id_column} {first!r} is negative; the metric takes log1p")
    if probabilities:
        outside = ((values < 0) | (values > 1)).any(1)
        if outside.any():
            raise DataError(f"probability for {id_column} {shown(ids[outside].iloc[0])!r} is outside [0, 1]")
        sums = np.abs(values.sum(1) - 1) > PROBABILITY_SUM_TOLERANCE
        if len(label_columns) > 1 and sums.any():
            raise DataError(f"class probabilities for {id_column} {shown(ids[sums].iloc[0])!r} "
                            f"sum to {values[sums][0].sum():.6f}, not 1")


def like_sample(frame: pd.DataFrame, checks: dict, sample: pd.DataFrame, where: str) -> tuple[pd.DataFrame, dict]:
    """``frame`` in the sample submission's exact format: its columns in its order, its rows in
    its order, its id dtype; the checks then compare against the sample."""
    id_column = checks["id_column"]
    if {str(c) for c in sample.columns} != {str(c) for c in frame.columns}:
        raise DataError(f"{where}: its columns ({','.join(map(str, sample.columns))}) are not this target's "
                        f"({','.join(map(str, frame.columns))}); fix id or label, or drop sample")
    keys = sample[id_column].astype(str)
    by_id = frame.set_axis(frame[id_column].astype(str), axis=0)
    missing = keys[~keys.isin(by_id.index)]
    if len(missing) or len(keys) != len(by_id):
        first = f" ({id_column} {missing.iloc[0]!r} is not a test id)" if len(missing) else ""
        raise DataError(f"{where}: its {len(keys)} rows are not the test file's {len(by_id)} ids{first}")
    columns = {str(c): c for c in frame.columns}
    out = by_id.loc[keys.to_numpy(), [columns[str(c)] for c in sample.columns]].set_axis(sample.columns, axis=1)
    out = out.reset_index(drop=True)
    out[id_column] = sample[id_column].to_numpy()
    labels = [c for c in sample.columns if c != id_column]
    return out, dict(checks, label_column=labels[0] if len(labels) == 1 else labels,
                     expected_ids=sample[id_column].tolist())


def write_submission(path: str | Path, frame: pd.DataFrame, **checks) -> Path:
    """Check ``frame`` (see :func:`check_submission`) and write it to ``path`` atomically."""
    check_submission(frame, **checks)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def write_copies(path: Path, out: Path | None, frame: pd.DataFrame, **checks) -> tuple[list[Path], dict]:
    """A submit stage's outputs: the workspace's copy at ``path`` and, when asked, the user's at ``out``."""
    write_submission(path, frame, **checks)
    if out:
        if not out.parent.exists():
            log.warning("creating the folder %s for %s", out.parent, out.name)
        write_submission(out, frame, **checks)
    return [path], {"submission": str(out or path), "rows": len(frame)}
