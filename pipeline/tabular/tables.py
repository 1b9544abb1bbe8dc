"""A tabular competition's CSVs, read and checked: a bad file ends in one line that names the
file, column, value and line, never in a traceback deep in pandas."""

from __future__ import annotations

import csv
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError, shown
from pipeline.metrics import Metric, metric_for
from pipeline.tasks import task_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableSpec:
    """What a tabular competition's CSVs hold: the id column, the label column, the task and
    the metric it is scored by; optionally the columns whose roles are declared (see
    :mod:`pipeline.tabular.columns`), the column whose groups must not straddle folds (the
    ``group`` split) and the date column that orders the rows in time (the ``time`` split)."""

    id: str
    label: str
    task: str = "regression"
    metric: str = "log_rmse"
    positive: str | int | None = None  # binary classification: the class whose probability is submitted
    columns: dict = field(default_factory=dict)
    group: str | None = None
    time: str | None = None
    higher_is_better: bool | None = None  # a custom metric's direction
    submits: str | None = None  # what a custom metric's submission holds
    other_labels: tuple = ()  # a competition's other label columns: not features of this one

    @property
    def scorer(self) -> Metric:
        return metric_for(self.metric, task_for(self.task).name, higher_is_better=self.higher_is_better,
                          submits=self.submits)


@dataclass
class Tables:
    """Checked raw frames: features only (id and label split off)."""

    train: pd.DataFrame
    test: pd.DataFrame
    labels: pd.Series
    test_ids: pd.Series
    spec: TableSpec
    train_path: Path
    test_path: Path
    train_ids: pd.Series | None = None


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV, turning pandas' failures into one-line errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty: expected a header row and data rows")
    try:
        with warnings.catch_warnings():
            # index_col=False: without it, a first data row with one field more than the header
            # silently turns the first column into the index and shifts every column left.
            # pandas then warns (ParserWarning) that it dropped the extra field; that is an error.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, encoding="utf-8", low_memory=False, index_col=False)
    except UnicodeDecodeError:
        # pandas decodes in chunks, so its exception's offset is within a chunk: find the real one.
        data = path.read_bytes()
        try:
            data.decode("utf-8")
            where = "somewhere"
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            where = f"byte {data[exc.start]:#04x} at offset {exc.start}, line {line}"
        raise DataError(f"{path} is not UTF-8 text ({where}); re-save it as UTF-8") from None
    except pd.errors.ParserWarning:
        raise DataError(f"{path}: line {_long_line(path)} has more fields than the header; "
                        "quote values that contain commas") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} has no columns: expected a header row") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path} is not a well-formed CSV: {str(exc).strip().splitlines()[-1]}") from None
    if frame.empty:
        raise DataError(f"{path} has a header but no data rows")
    return frame


def _long_line(path: Path) -> int | str:
    """The first line (1-based, as an editor counts) with more fields than the header."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        width = len(next(reader, []))
        for row in reader:
            if len(row) > width:
                return reader.line_num
    return "?"


def _check_ids(frame: pd.DataFrame, spec: TableSpec, path: Path) -> None:
    if spec.id not in frame.columns:
        raise DataError(f"{path} has no id column {spec.id!r} (columns: {_preview(frame.columns)})")
    ids = frame[spec.id]
    if ids.isna().any():
        raise DataError(f"{path}: id column {spec.id!r} is empty at line {_line(ids.isna())}")
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        raise DataError(f"{path}: duplicate {spec.id} {shown(ids[duplicated].iloc[0])!r} at lines "
                        f"{', '.join(str(i + 2) for i in np.flatnonzero(duplicated)[:3])}")


def _check_labels(frame: pd.DataFrame, spec: TableSpec, path: Path) -> pd.Series:
    if spec.label not in frame.columns:
        raise DataError(f"{path} has no label column {spec.label!r} (columns: {_preview(frame.columns)})")
    labels = frame[spec.label]
    if labels.isna().any():
        raise DataError(f"{path}: label {spec.label!r} is missing at line {_line(labels.isna())}; "
                        "drop or fill those rows")
    return spec.scorer.task.checked(labels, spec.scorer, f"{path}: label {spec.label!r}")


def load_tables(train_path: str | Path, test_path: str | Path, spec: TableSpec) -> Tables:
    """Read and check both CSVs; align their feature columns."""
    train_path, test_path = Path(train_path), Path(test_path)
    spec.scorer  # a task or metric that does not fit is refused before any file is read
    train, test = read_csv(train_path), read_csv(test_path)
    _check_ids(train, spec, train_path)
    _check_ids(test, spec, test_path)
    labels = _check_labels(train, spec, train_path)
    for role in ("group", "time"):
        name = getattr(spec, role)
        if name is not None and name not in train.columns:
            raise DataError(f"{train_path} has no {role} column {name!r} (columns: {_preview(train.columns)})")
    labels_and_id = [spec.id, spec.label, *spec.other_labels]
    missing = [c for c in spec.other_labels if c not in train.columns]
    if missing:
        raise DataError(f"{train_path} has no label column {missing[0]!r} (columns: {_preview(train.columns)})")
    train_features = _infinite_as_missing(train.drop(columns=labels_and_id), train_path)
    test_features = _infinite_as_missing(test.drop(columns=labels_and_id, errors="ignore"), test_path)

    # Documented handling: a feature present on one side only cannot be used for prediction,
    # and a column with no values carries no information; both are dropped with a warning.
    # A column with values in the test file only is dropped too: the model cannot learn a weight
    # for it, so its test values would only add noise (and fit_on="train" could not scale it).
    only_train = [c for c in train_features.columns if c not in test_features.columns]
    only_test = [c for c in test_features.columns if c not in train_features.columns]
    if only_train:
        log.warning("%s: dropping %s (absent from %s)", train_path.name, _preview(only_train), test_path.name)
    if only_test:
        log.warning("%s: dropping %s (absent from %s)", test_path.name, _preview(only_test), train_path.name)
    common = [c for c in train_features.columns if c in test_features.columns]
    empty = [c for c in common if train_features[c].isna().all()]
    if empty:
        log.warning("dropping %s: no values in %s", _preview(empty), train_path.name)
    keep = [c for c in common if c not in empty]
    if not keep:
        raise DataError(f"{train_path} and {test_path} share no feature column with values")
    return Tables(train_features[keep], test_features[keep], labels, test[spec.id], spec, train_path, test_path,
                  train[spec.id])


def read_test(path: str | Path, spec: TableSpec, columns: list[str]) -> tuple[list, pd.DataFrame]:
    """Another test file for a trained model: its ids, and its feature ``columns`` (those the
    model was trained on; any other column is ignored)."""
    path = Path(path)
    frame = read_csv(path)
    _check_ids(frame, spec, path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path} lacks the column(s) {_preview(missing)} that the model was trained on")
    return [shown(i) for i in frame[spec.id]], _infinite_as_missing(frame[columns], path)


def _infinite_as_missing(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Infinite feature values become missing (NaN), with a warning that names the columns.

    Chosen over an error: the test CSV is the competition's and cannot be fixed, and an infinite
    feature is most often a ratio with a zero denominator, i.e. an unknown value; missing values
    are then imputed with the column's mean like any other NaN (d2l's handling).
    """
    numeric = [c for c in frame.columns
               if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    infinite = {c: int(np.isinf(frame[c].to_numpy(dtype=np.float64)).sum()) for c in numeric}
    infinite = {c: n for c, n in infinite.items() if n}
    if not infinite:
        return frame
    log.warning("%s: treating %d infinite value(s) in %s as missing", path.name, sum(infinite.values()),
                _preview(infinite))
    frame = frame.copy()
    for c in infinite:
        frame[c] = frame[c].astype(np.float64).replace([np.inf, -np.inf], np.nan)
    return frame


def _line(mask) -> int:
    """The CSV line of the first True in ``mask`` (line 1 is the header)."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 2


def _preview(names, limit: int = 6) -> str:
    names = [str(n) for n in names]
    more = f", … ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
