"""Tabular features: read and check a competition's CSVs, then turn them into float32 tensors.

The transforms are scikit-learn's (ColumnTransformer, StandardScaler, SimpleImputer,
OneHotEncoder); this module only decides which columns get which and checks the inputs, so
that a bad CSV ends in a one-line :class:`DataError` instead of a traceback deep in pandas.
"""

from __future__ import annotations

import csv
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.impute import SimpleImputer

from pipeline.errors import DataError, shown

log = logging.getLogger(__name__)

TASKS = ("regression", "classification")
METRICS = {"log_rmse": "regression", "rmse": "regression", "accuracy": "classification"}
MISSING = "<missing>"  # the category that stands for NaN, as d2l's get_dummies(dummy_na=True)


@dataclass(frozen=True)
class TableSpec:
    """What a tabular competition's CSVs hold: the id column, the label column and the task."""

    id: str
    label: str
    task: str = "regression"
    metric: str = "log_rmse"


@dataclass(frozen=True)
class FeatureParams:
    """Preprocessing choices; stored with every output made from them.

    ``fit_on``: ``all`` fits the scaler and categories on train+test features (d2l's way; it
    uses no labels), ``train`` on the training rows only. ``log_skewed``: apply log1p to
    non-negative numeric columns whose absolute skewness exceeds this (0 turns it off).
    ``clip_quantile``: clip each numeric column to its [q, 1-q] quantiles first (winsorizing),
    so a few extreme rows cannot make a linear model extrapolate wildly (0 turns it off).
    """

    fit_on: str = "all"
    log_skewed: float = 0.0
    clip_quantile: float = 0.0

    def __post_init__(self):
        if self.fit_on not in ("all", "train"):
            raise DataError(f"fit_on={self.fit_on!r} is not one of all, train")
        if not 0 <= self.clip_quantile < 0.5:
            raise DataError(f"clip_quantile={self.clip_quantile} must be in [0, 0.5)")


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


@dataclass
class Features:
    """Model-ready tensors. ``y`` is float32 for regression, int64 class indices otherwise."""

    X: torch.Tensor
    y: torch.Tensor
    X_test: torch.Tensor
    test_ids: list
    names: list[str]
    spec: TableSpec
    classes: list = field(default_factory=list)

    def to_state(self) -> dict:
        """A dict of tensors and plain values, loadable with ``torch.load(weights_only=True)``."""
        return {
            "X": self.X, "y": self.y, "X_test": self.X_test, "test_ids": list(self.test_ids),
            "names": self.names, "spec": asdict(self.spec), "classes": list(self.classes),
        }

    @classmethod
    def from_state(cls, state: dict) -> "Features":
        state = dict(state)
        state["spec"] = TableSpec(**state["spec"])
        return cls(**state)


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
    if spec.task == "classification":
        return labels
    numeric = pd.to_numeric(labels, errors="coerce")
    if numeric.isna().any():
        bad = numeric.isna()
        raise DataError(f"{path}: label {spec.label!r} holds non-numeric {shown(labels[bad].iloc[0])!r} "
                        f"at line {_line(bad)}")
    values = numeric.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{path}: label {spec.label!r} is infinite at line {_line(~np.isfinite(values))}")
    if spec.metric == "log_rmse" and (values <= 0).any():
        bad = values <= 0
        raise DataError(f"{path}: label {spec.label!r} is {values[bad][0]:g} at line {_line(bad)}; "
                        "log_rmse needs positive labels (use metric rmse)")
    return numeric.astype(np.float64)


def load_tables(train_path: str | Path, test_path: str | Path, spec: TableSpec) -> Tables:
    """Read and check both CSVs; align their feature columns."""
    train_path, test_path = Path(train_path), Path(test_path)
    if spec.task not in TASKS:
        raise DataError(f"task {spec.task!r} is not one of {', '.join(TASKS)}")
    if METRICS.get(spec.metric) != spec.task:
        raise DataError(f"metric {spec.metric!r} does not fit task {spec.task!r} "
                        f"(choose from {', '.join(m for m, t in METRICS.items() if t == spec.task)})")
    train, test = read_csv(train_path), read_csv(test_path)
    _check_ids(train, spec, train_path)
    _check_ids(test, spec, test_path)
    labels = _check_labels(train, spec, train_path)
    train_features = _infinite_as_missing(train.drop(columns=[spec.id, spec.label]), train_path)
    test_features = _infinite_as_missing(test.drop(columns=[spec.id, spec.label], errors="ignore"), test_path)

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
    return Tables(train_features[keep], test_features[keep], labels, test[spec.id], spec, train_path, test_path)


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


class _OneHotWithMissing(OneHotEncoder):
    """One-hot with a missing-value column for every categorical column, present or not.

    d2l's ``get_dummies(dummy_na=True)`` always adds that column; OneHotEncoder only learns
    categories it sees, so the missing marker is appended to each column's categories here.
    """

    def fit(self, X, y=None):
        frame = pd.DataFrame(X)
        self.categories = [
            sorted(set(frame[c]) - {MISSING}) + [MISSING] for c in frame.columns
        ]
        return super().fit(X, y)


def _as_text(frame):
    return pd.DataFrame(frame).astype(object).where(pd.DataFrame(frame).notna(), MISSING).astype(str)


def make_transformer(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Standardize numeric columns then fill their NaN with 0 (the mean); one-hot categoricals."""
    return ColumnTransformer(
        [
            ("numeric", make_pipeline(StandardScaler(), SimpleImputer(strategy="constant", fill_value=0.0)), numeric),
            ("categorical", make_pipeline(
                FunctionTransformer(_as_text, feature_names_out="one-to-one"),
                _OneHotWithMissing(handle_unknown="ignore", sparse_output=False, dtype=np.float32),
            ), categorical),
        ],
        verbose_feature_names_out=False,
    )


def skewed_columns(frame: pd.DataFrame, numeric: list[str], threshold: float) -> list[str]:
    """Non-negative numeric columns whose absolute skewness exceeds ``threshold``."""
    if threshold <= 0:
        return []
    values = frame[numeric]
    skew = values.skew()
    return [c for c in numeric if abs(skew[c]) > threshold and values[c].min() >= 0]


def build_features(tables: Tables, params: FeatureParams = FeatureParams()) -> Features:
    """Fit the preprocessing on train+test features (or train only) and return tensors."""
    train, test = tables.train, tables.test
    numeric = [c for c in train.columns if pd.api.types.is_numeric_dtype(train[c])
               and pd.api.types.is_numeric_dtype(test[c])]
    categorical = [c for c in train.columns if c not in numeric]
    fit_frame = pd.concat([train, test]) if params.fit_on == "all" else train
    if params.clip_quantile and numeric:
        values = fit_frame[numeric].astype(np.float64)
        low, high = values.quantile(params.clip_quantile), values.quantile(1 - params.clip_quantile)
        train, test, fit_frame = (f.assign(**{c: f[c].astype(np.float64).clip(low[c], high[c]) for c in numeric})
                                  for f in (train, test, fit_frame))
    logged = skewed_columns(fit_frame, numeric, params.log_skewed)
    if logged:
        # float64 first: log1p of a bool column would otherwise be float16.
        train, test, fit_frame = (f.assign(**{c: np.log1p(f[c].astype(np.float64)) for c in logged})
                                  for f in (train, test, fit_frame))
    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        # Overflow is reported below, per column (the imputer would drop the scaler's NaN column).
        warnings.filterwarnings("ignore", message="Skipping features without any observed values")
        transformer = make_transformer(numeric, categorical).fit(fit_frame)
    if numeric:  # a sum or a sum of squares beyond float64
        scaler = transformer.named_transformers_["numeric"][0]
        overflow = np.flatnonzero(~(np.isfinite(scaler.mean_) & np.isfinite(scaler.var_)))
        if len(overflow):
            column = numeric[int(overflow[0])]
            path = tables.test_path if test[column].abs().max() > train[column].abs().max() else tables.train_path
            raise DataError(f"{path}: column {column!r} has values too large to standardize; "
                            "rescale it (e.g. take its log)")
    try:
        names = list(transformer.get_feature_names_out())
    except ValueError as exc:  # e.g. a numeric column "Color_red" beside a category Color == "red"
        raise DataError(f"{tables.train_path}: two features get the same name "
                        f"({str(exc).split(' are not unique')[0].removeprefix('Output feature names: ')}); "
                        "rename the column") from None
    with np.errstate(over="ignore", invalid="ignore"):
        X = transformer.transform(train).astype(np.float32)
        X_test = transformer.transform(test).astype(np.float32)
    for values, path in ((X, tables.train_path), (X_test, tables.test_path)):
        bad = np.flatnonzero(~np.isfinite(values).all(axis=0))
        if len(bad):  # with fit_on="train", a test value far outside the training range
            raise DataError(f"{path}: column {names[int(bad[0])]!r} has values too large "
                            "to standardize into float32; rescale it (e.g. take its log)")
    classes: list = []
    if tables.spec.task == "classification":
        codes, uniques = pd.factorize(tables.labels, sort=True)
        y = torch.from_numpy(codes.astype(np.int64))
        classes = [u.item() if hasattr(u, "item") else u for u in uniques]
    else:
        y = torch.from_numpy(tables.labels.to_numpy(dtype=np.float32))
    return Features(
        X=torch.from_numpy(np.ascontiguousarray(X)), y=y,
        X_test=torch.from_numpy(np.ascontiguousarray(X_test)),
        test_ids=[i.item() if hasattr(i, "item") else i for i in tables.test_ids],
        names=names, spec=tables.spec, classes=classes,
    )


def _line(mask) -> int:
    """The CSV line of the first True in ``mask`` (line 1 is the header)."""
    return int(np.flatnonzero(np.asarray(mask))[0]) + 2


def _preview(names, limit: int = 6) -> str:
    names = [str(n) for n in names]
    more = f", … ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
