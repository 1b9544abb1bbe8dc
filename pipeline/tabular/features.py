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
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, RobustScaler, SplineTransformer, StandardScaler

from pipeline import checkpoints
from pipeline.errors import DataError, ParamError, shown
from pipeline.tabular.tables import TableSpec, Tables

MISSING = "<missing>"  # the category that stands for NaN, as d2l's get_dummies(dummy_na=True)
FIT_ON = ("all", "train")
SCALINGS = ("standard", "robust")


@dataclass(frozen=True)
class FeatureParams:
    """Preprocessing choices; stored with every output made from them.

    ``fit_on``: ``all`` fits the scaler and categories on train+test features (d2l's way; it
    uses no labels), ``train`` on the training rows only. ``log_skewed``: apply log1p to
    non-negative numeric columns whose absolute skewness exceeds this (0 turns it off).
    ``clip_quantile``: clip each numeric column to its [q, 1-q] quantiles first (winsorizing),
    so a few extreme rows cannot make a linear model extrapolate wildly (0 turns it off).
    ``scaling``: ``standard`` (mean 0, std 1, d2l's) or ``robust``: centred on the median,
    divided by the interquartile range, then smoothly clipped to (-3, 3) with x / sqrt(1 + x^2/9)
    (RealMLP's preprocessing), so that outliers neither dominate the scale nor the inputs.
    ``numeric_bins``: also encode each numeric column piecewise-linearly between its quantiles
    (``numeric_bins`` + 1 knots; Gorishniy et al. 2022), plus a missing-value indicator, so that
    linear models and MLPs get non-linear effects of a number for free (0 turns it off).
    """

    fit_on: str = "all"
    log_skewed: float = 0.0
    clip_quantile: float = 0.0
    scaling: str = "standard"
    numeric_bins: int = 0

    def __post_init__(self):
        if self.fit_on not in FIT_ON:
            raise ParamError("fit_on", self.fit_on, f"not one of {', '.join(FIT_ON)}")
        if self.scaling not in SCALINGS:
            raise ParamError("scaling", self.scaling, f"not one of {', '.join(SCALINGS)}")
        if not 0 <= self.clip_quantile < 0.5:
            raise ParamError("clip_quantile", self.clip_quantile, "must be in [0, 0.5)")
        if self.numeric_bins < 0 or self.numeric_bins == 1:
            raise ParamError("numeric_bins", self.numeric_bins, "must be 0 (off) or at least 2")


@dataclass
class Features:
    """Model-ready tensors. ``y`` is float32 for regression, int64 class indices otherwise
    (sorted, the declared positive class last).

    ``X`` holds scaled numeric columns and one-hot categories, for torch and linear models;
    ``native`` the columns as they are, for trees: numbers with NaN where missing, categories as
    codes (NaN missing) in the columns listed in ``native_categorical``.
    """

    X: torch.Tensor
    y: torch.Tensor
    X_test: torch.Tensor
    test_ids: list
    names: list[str]
    spec: TableSpec
    classes: list = field(default_factory=list)
    native: torch.Tensor | None = None
    native_test: torch.Tensor | None = None
    native_names: list[str] = field(default_factory=list)
    native_categorical: list[int] = field(default_factory=list)
    builder: "FeatureBuilder | None" = None  # what made them, to make a later test file's

    def to_state(self) -> dict:
        """A dict of tensors and plain values, loadable with ``torch.load(weights_only=True)``."""
        return {
            "X": self.X, "y": self.y, "X_test": self.X_test, "test_ids": list(self.test_ids),
            "names": self.names, "spec": asdict(self.spec), "classes": list(self.classes),
            "native": self.native, "native_test": self.native_test, "native_names": self.native_names,
            "native_categorical": self.native_categorical, "builder": checkpoints.pack(self.builder),
        }

    @classmethod
    def from_state(cls, state: dict) -> "Features":
        state = dict(state)
        state["spec"] = TableSpec(**state["spec"])
        state["builder"] = checkpoints.unpack(state["builder"])
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


def smooth_clip(x: np.ndarray) -> np.ndarray:
    """x / sqrt(1 + x^2 / 9): about x near 0, tending to +-3 (finite for any finite input)."""
    x = np.clip(x, -1e30, 1e30)
    return 3 * x / np.hypot(3, x)


def make_transformer(numeric: list[str], categorical: list[str], scaling: str = "standard",
                     numeric_bins: int = 0) -> ColumnTransformer:
    """Scale numeric columns then fill their NaN with 0 (the mean, or the median); one-hot
    categoricals; with ``numeric_bins``, quantile splines of the numeric columns after them."""
    scalers = [StandardScaler()] if scaling == "standard" else \
        [RobustScaler(), FunctionTransformer(smooth_clip, feature_names_out="one-to-one")]
    splines = [("splines", QuantileSplines(numeric_bins), numeric)] if numeric_bins and numeric else []
    return ColumnTransformer(
        [
            ("numeric", make_pipeline(*scalers, SimpleImputer(strategy="constant", fill_value=0.0)), numeric),
            ("categorical", make_pipeline(
                FunctionTransformer(_as_text, feature_names_out="one-to-one"),
                _OneHotWithMissing(handle_unknown="ignore", sparse_output=False, dtype=np.float32),
            ), categorical),
            *splines,
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
            scaled = scaler.transform(frame[numeric].astype(np.float64))
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


class QuantileSplines(TransformerMixin, BaseEstimator):
    """Each numeric column as degree-1 B-splines (piecewise-linear "hat" functions) on knots at
    its quantiles, through scikit-learn's SplineTransformer, one per column so that each gets
    its own knots (repeated quantiles of a column with few values collapse), plus an indicator
    for each column with missing values (missing values sit at the median)."""

    def __init__(self, bins: int = 16):
        self.bins = bins

    def fit(self, X, y=None):
        self.columns_ = [str(c) for c in X.columns] if hasattr(X, "columns") else list(range(np.shape(X)[1]))
        X = np.asarray(X, dtype=np.float64)
        self.medians_ = np.nan_to_num(np.nanmedian(X, axis=0)) if len(X) else np.zeros(X.shape[1])
        self.missing_ = np.flatnonzero(np.isnan(X).any(axis=0))
        self.splines_ = {}
        for j in range(X.shape[1]):
            values = X[~np.isnan(X[:, j]), j]
            knots = np.unique(np.quantile(values, np.linspace(0, 1, self.bins + 1))) if len(values) else []
            if len(knots) >= 3:  # two knots make one linear piece: the scaled column has it already
                self.splines_[j] = SplineTransformer(knots=knots[:, None], degree=1, extrapolation="constant").fit(
                    knots[:, None])
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float64)
        filled = np.where(np.isnan(X), self.medians_, X)
        parts = [spline.transform(filled[:, [j]]) for j, spline in self.splines_.items()]
        parts.append(np.isnan(X[:, self.missing_]).astype(np.float64))
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(X), 0))

    def get_feature_names_out(self, input_features=None):
        names = [f"{self.columns_[j]}_knot{k}" for j, spline in self.splines_.items()
                 for k in range(spline.n_features_out_)]
        return np.array(names + [f"{self.columns_[j]}_missing" for j in self.missing_], dtype=object)


class FeatureBuilder:
    """The preprocessing fit on a competition's tables: which columns are numbers and which
    categories, the winsorizing bounds, the log1p'd columns, scikit-learn's fitted transformer
    and the category codes for trees. It turns any frame with the same columns (the training
    rows, the test rows, a later test file) into features, so a saved model predicts new rows."""

    def __init__(self, tables: Tables, params: FeatureParams):
        train, test = tables.train, tables.test
        self.params, self.columns = params, list(train.columns)
        self.numeric = [c for c in train.columns if pd.api.types.is_numeric_dtype(train[c])
                        and pd.api.types.is_numeric_dtype(test[c])]
        self.categorical = [c for c in train.columns if c not in self.numeric]
        both = pd.concat([train, test])
        self.categories = {c: sorted(both[c].dropna().astype(str).unique()) for c in self.categorical}
        fit_frame = both if params.fit_on == "all" else train
        self.bounds = None
        if params.clip_quantile and self.numeric:
            values = fit_frame[self.numeric].astype(np.float64)
            self.bounds = tuple(values.quantile(q).to_dict() for q in (params.clip_quantile, 1 - params.clip_quantile))
        fit_frame = self._clipped(fit_frame)
        self.logged = skewed_columns(fit_frame, self.numeric, params.log_skewed)
        self.transformer = self._fit_transformer(self._logged(fit_frame), tables)
        try:
            self.names = list(self.transformer.get_feature_names_out())
        except ValueError as exc:  # e.g. a numeric column "Color_red" beside a category Color == "red"
            raise DataError(f"{tables.train_path}: two features get the same name "
                            f"({str(exc).split(' are not unique')[0].removeprefix('Output feature names: ')}); "
                            "rename the column") from None

    def _clipped(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.bounds is None:
            return frame
        low, high = self.bounds
        return frame.assign(**{c: frame[c].astype(np.float64).clip(low[c], high[c]) for c in self.numeric})

    def _logged(self, frame: pd.DataFrame) -> pd.DataFrame:
        # float64 first: log1p of a bool column would otherwise be float16.
        return frame.assign(**{c: np.log1p(frame[c].astype(np.float64)) for c in self.logged}) if self.logged else frame

    def _fit_transformer(self, fit_frame: pd.DataFrame, tables: Tables) -> ColumnTransformer:
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            # Overflow is reported below, per column (the imputer would drop the scaler's NaN column).
            warnings.filterwarnings("ignore", message="Skipping features without any observed values")
            transformer = make_transformer(self.numeric, self.categorical, self.params.scaling,
                                           self.params.numeric_bins).fit(fit_frame)
        if self.numeric and self.params.scaling == "standard":  # a sum or a sum of squares beyond float64
            scaler = transformer.named_transformers_["numeric"][0]
            overflow = np.flatnonzero(~(np.isfinite(scaler.mean_) & np.isfinite(scaler.var_)))
            if len(overflow):
                column = self.numeric[int(overflow[0])]
                path = tables.test_path if tables.test[column].abs().max() > tables.train[column].abs().max() \
                    else tables.train_path
                raise DataError(f"{path}: column {column!r} has values too large to standardize; "
                                "rescale it (e.g. take its log)")
        return transformer

    def transform(self, frame: pd.DataFrame, path) -> tuple[np.ndarray, np.ndarray]:
        """``frame``'s dense features (scaled numbers, one-hot categories) and native columns
        (numbers as they are, category codes; NaN where missing), both float32."""
        frame = frame.reset_index(drop=True)  # rows by position, whatever index the frame came with
        dense = _transformed(self.transformer, self._logged(self._clipped(frame)), path, self.names, self.numeric)
        return np.ascontiguousarray(dense), self._native(frame)

    def _native(self, frame: pd.DataFrame) -> np.ndarray:
        numbers = frame[self.numeric].astype(np.float64).to_numpy(dtype=np.float32) if self.numeric else \
            np.zeros((len(frame), 0), np.float32)
        codes = [pd.Categorical(frame[c].dropna().astype(str).reindex(frame.index),
                                categories=self.categories[c]).codes for c in self.categorical]
        codes = np.stack(codes, 1).astype(np.float32) if codes else np.zeros((len(frame), 0), np.float32)
        codes[codes < 0] = np.nan
        return np.ascontiguousarray(np.concatenate([numbers, codes], 1))

    @property
    def native_names(self) -> list[str]:
        return self.numeric + self.categorical


def build_features(tables: Tables, params: FeatureParams = FeatureParams()) -> Features:
    """Fit the preprocessing on train+test features (or train only) and return tensors."""
    builder = FeatureBuilder(tables, params)
    (X, native), (X_test, native_test) = (builder.transform(frame, path) for frame, path in
                                          ((tables.train, tables.train_path), (tables.test, tables.test_path)))
    y, classes = tables.spec.scorer.task.encode(tables.labels, tables.spec.positive, str(tables.train_path))
    return Features(
        X=torch.from_numpy(X), y=torch.from_numpy(y), X_test=torch.from_numpy(X_test),
        test_ids=[shown(i) for i in tables.test_ids], names=builder.names, spec=tables.spec, classes=classes,
        native=torch.from_numpy(native), native_test=torch.from_numpy(native_test),
        native_names=builder.native_names,
        native_categorical=list(range(len(builder.numeric), len(builder.native_names))), builder=builder)
