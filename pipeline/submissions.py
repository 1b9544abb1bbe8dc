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
                     probabilities: bool = False, numeric: bool = True, rows_per_id: int = 1) -> None:
    """Raise :class:`DataError` unless ``frame`` is exactly what the competition accepts.

    ``label_column`` is one column, or for multiclass probabilities one per class, or one per
    label of a competition with several (``numeric``: they hold numbers, not class labels).
    ``rows_per_id`` > 1: each id has that many rows together, a ranked list of distinct ``classes``
    (see :class:`pipeline.metrics.Submits`)."""
    label_columns = [label_column] if isinstance(label_column, str) else list(label_column)
    if list(frame.columns) != [id_column, *label_columns]:
        raise DataError(f"submission header is {','.join(map(str, frame.columns))}; "
                        f"expected exactly {','.join([id_column, *label_columns])}")
    ids = frame[id_column]
    _check_ids(ids, id_column, expected_ids, rows_per_id)
    if not numeric:
        return
    if classes is not None:
        _check_classes(frame, id_column, label_columns[0], classes, rows_per_id)
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


def _check_ids(ids: pd.Series, id_column: str, expected_ids: list, rows_per_id: int) -> None:
    """The test file's ids in its order, each ``rows_per_id`` times in a row."""
    if len(ids) != len(expected_ids) * rows_per_id:
        expected = f"{len(expected_ids)}" if rows_per_id == 1 else \
            f"{len(expected_ids)} ids x {rows_per_id} rows = {len(expected_ids) * rows_per_id}"
        raise DataError(f"submission has {len(ids)} rows; the test set has {expected}")
    over = ids.groupby(ids, sort=False, dropna=False).cumcount() >= rows_per_id
    if over.any():
        times = "" if rows_per_id == 1 else f" more than {rows_per_id} times"
        raise DataError(f"submission repeats {id_column} {shown(ids[over].iloc[0])!r}{times}")
    if list(ids) != [i for i in expected_ids for _ in range(rows_per_id)]:
        order = "in order or value" if rows_per_id == 1 else f"each {rows_per_id} times in a row, in its order"
        raise DataError(f"submission {id_column}s differ from the test file's, {order}")


def _check_classes(frame: pd.DataFrame, id_column: str, label: str, classes: list, rows_per_id: int) -> None:
    """Known classes; in a ranked list (several rows per id), none twice for one id."""
    labels = frame[label]
    unknown = ~labels.isin(classes)
    if unknown.any():
        raise DataError(f"submission {label} {shown(labels[unknown].iloc[0])!r} is not a known class")
    if rows_per_id == 1:
        return
    repeated = frame.duplicated([id_column, label])
    if repeated.any():
        first = frame[repeated].iloc[0]
        raise DataError(f"submission ranks {label} {shown(first[label])!r} twice for {id_column} "
                        f"{shown(first[id_column])!r}; each id's {rows_per_id} classes must be distinct")


def like_sample(frame: pd.DataFrame, checks: dict, sample: pd.DataFrame, where: str) -> tuple[pd.DataFrame, dict]:
    """``frame`` in the sample submission's exact format: its columns in its order, its rows in
    its order (each id's rows together, as many as the checks' ``rows_per_id``), its id dtype;
    the checks then compare against the sample."""
    id_column, per_id = checks["id_column"], checks.get("rows_per_id", 1)
    if {str(c) for c in sample.columns} != {str(c) for c in frame.columns}:
        raise DataError(f"{where}: its columns ({','.join(map(str, sample.columns))}) are not this target's "
                        f"({','.join(map(str, frame.columns))}); fix id or label, or drop sample")
    keys = sample[id_column].astype(str)
    if per_id > 1:
        _check_runs(keys, id_column, per_id, where)
    by_id = frame.set_axis(frame[id_column].astype(str), axis=0)
    firsts = keys.iloc[::per_id]
    missing = firsts[~firsts.isin(by_id.index)]
    if len(missing) or len(keys) != len(by_id):
        first = f" ({id_column} {missing.iloc[0]!r} is not a test id)" if len(missing) else ""
        ids = f"{len(by_id)} ids" if per_id == 1 else f"{len(by_id) // per_id} ids x {per_id} rows"
        raise DataError(f"{where}: its {len(keys)} rows are not the test file's {ids}{first}")
    columns = {str(c): c for c in frame.columns}
    out = by_id.loc[firsts.to_numpy(), [columns[str(c)] for c in sample.columns]].set_axis(sample.columns, axis=1)
    out = out.reset_index(drop=True)
    out[id_column] = sample[id_column].to_numpy()
    labels = [c for c in sample.columns if c != id_column]
    return out, dict(checks, label_column=labels[0] if len(labels) == 1 else labels,
                     expected_ids=sample[id_column].iloc[::per_id].tolist())


def _check_runs(keys: pd.Series, id_column: str, per_id: int, where: str) -> None:
    """A sample of several rows per id holds each id that many times in a row."""
    runs = keys.ne(keys.shift()).cumsum()
    wrong = keys.groupby(runs).transform("size") != per_id
    if wrong.any():
        raise DataError(f"{where}: {id_column} {keys[wrong].iloc[0]!r} is not {per_id} times in a row; this "
                        f"target's metric submits {per_id} rows per id: fix the sample or the metric")


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
