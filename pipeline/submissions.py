"""Kaggle submission CSVs, checked before they are written (and written atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError, shown
from pipeline.workspace import atomic_path


def check_submission(frame: pd.DataFrame, *, id_column: str, label_column: str, expected_ids: list,
                     positive: bool = False, classes: list | None = None) -> None:
    """Raise :class:`DataError` unless ``frame`` is exactly what the competition accepts."""
    if list(frame.columns) != [id_column, label_column]:
        raise DataError(f"submission header is {','.join(map(str, frame.columns))}; "
                        f"expected exactly {id_column},{label_column}")
    if len(frame) != len(expected_ids):
        raise DataError(f"submission has {len(frame)} rows; the test set has {len(expected_ids)}")
    ids = frame[id_column]
    if ids.duplicated().any():
        raise DataError(f"submission repeats {id_column} {shown(ids[ids.duplicated()].iloc[0])!r}")
    if list(ids) != list(expected_ids):
        raise DataError(f"submission {id_column}s differ from the test file's, in order or value")
    labels = frame[label_column]
    if classes is not None:
        unknown = ~labels.isin(classes)
        if unknown.any():
            raise DataError(f"submission {label_column} {shown(labels[unknown].iloc[0])!r} is not a known class")
        return
    values = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(f"{bad.sum()} predictions are not finite (first: {id_column} {shown(ids[bad].iloc[0])!r}); "
                        "the model diverged, nothing was written — lower --lr")
    if positive and (values <= 0).any():
        first = shown(ids[values <= 0].iloc[0])
        raise DataError(f"prediction for {id_column} {first!r} is not positive; the metric takes logs")


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
        write_submission(out, frame, **checks)
    return [path], {"submission": str(out or path), "rows": len(frame)}
