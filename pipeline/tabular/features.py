"""Tabular features: checked tables -> float32 tensors, with scikit-learn's transformers.

The transforms are scikit-learn's (ColumnTransformer, StandardScaler, SimpleImputer,
OneHotEncoder); this module only decides which columns get which, and refuses values that
cannot become finite float32 features with a one-line :class:`DataError`.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from pipeline.errors import DataError, ParamError
from pipeline.tabular.tables import TableSpec, Tables

MISSING = "<missing>"  # the category that stands for NaN, as d2l's get_dummies(dummy_na=True)
FIT_ON = ("all", "train")


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
        if self.fit_on not in FIT_ON:
            raise ParamError("fit_on", self.fit_on, f"not one of {', '.join(FIT_ON)}")
        if not 0 <= self.clip_quantile < 0.5:
            raise ParamError("clip_quantile", self.clip_quantile, "must be in [0, 0.5)")


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


def _transformed(transformer: ColumnTransformer, frame: pd.DataFrame, path, names: list[str],
                 numeric: list[str]) -> np.ndarray:
    """``frame`` as finite float32 features. With fit_on="train", a test value far outside the
    training range can overflow when standardized: float64 (the imputer then refuses it) or
    float32; either is one line naming the column."""
    too_large = "has values too large to standardize into float32; rescale it (e.g. take its log)"
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            values = transformer.transform(frame).astype(np.float32)
        except ValueError as exc:
            if "infinity" not in str(exc):
                raise
            scaler = transformer.named_transformers_["numeric"][0]
            scaled = (frame[numeric].astype(np.float64).to_numpy() - scaler.mean_) / scaler.scale_
            column = numeric[int(np.flatnonzero(np.isinf(scaled).any(axis=0))[0])]
            raise DataError(f"{path}: column {column!r} {too_large}") from None
    bad = np.flatnonzero(~np.isfinite(values).all(axis=0))
    if len(bad):
        raise DataError(f"{path}: column {names[int(bad[0])]!r} {too_large}")
    return values


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
    X, X_test = (_transformed(transformer, frame, path, names, numeric)
                 for frame, path in ((train, tables.train_path), (test, tables.test_path)))
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


