"""The scikit-learn transformers this package adds, and the columns each role derives.

scikit-learn scales, imputes and one-hot encodes; what it lacks is here: a one-hot with d2l's
missing-value column, per-column quantile splines, RealMLP's smooth clipping, and a column's
derived features by its role (a date's parts, a text's length and words, a category's levels
with the rare ones merged, and its frequency).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, RobustScaler, SplineTransformer, StandardScaler

from pipeline.errors import DataError
from pipeline.tabular.columns import Column

MISSING = "<missing>"  # the category that stands for NaN, as d2l's get_dummies(dummy_na=True)
RARE = "<rare>"  # the category of levels seen too rarely, or beyond the most frequent max_levels
EPOCH = pd.Timestamp("1970-01-01")
# A text's terms: word unigrams and bigrams seen in at least 2 texts and character 2-5 grams
# (within words) seen in at least 3, sublinear counts. On strikes' remarks a logistic regression
# on the words alone scores AUC 0.789 in 5-fold CV, on both 0.795; as the in-fold text model
# beside the other columns, the auto recipe's CV went from 0.9010 to 0.9049.
TEXT_VOCABULARY = 100_000  # terms of each kind at most, the most frequent


class Strings:
    """A list of strings kept as one string, with its positions looked up by a dict built when
    first needed: skops stores a dict of strikes' 25,000 character n-grams as 17 MB in 9 s, one
    string in a fraction of that."""

    SEPARATOR = "\x00"

    def __init__(self, strings):
        self.joined, self.size = self.SEPARATOR.join(strings), len(strings)

    @cached_property
    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.joined.split(self.SEPARATOR))} if self.size else {}

    def __getstate__(self) -> dict:
        return {"joined": self.joined, "size": self.size}


class TextTerms:
    """A text column's TF-IDF terms (see TEXT_VOCABULARY), fit on texts without labels; kept as
    each vectorizer's params, terms and idf, and rebuilt from them when first used."""

    KINDS = ({"ngram_range": (1, 2), "min_df": 2}, {"analyzer": "char_wb", "ngram_range": (2, 5), "min_df": 3})

    def __init__(self, texts: pd.Series):
        self.parts = []
        for kind in self.KINDS:
            vectorizer = TfidfVectorizer(sublinear_tf=True, max_features=TEXT_VOCABULARY, dtype=np.float32, **kind)
            try:
                vectorizer.fit(texts)
            except ValueError:  # too few texts for min_df, or nothing but blanks: no terms of this kind
                continue
            terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
            self.parts.append((kind, Strings(terms), vectorizer.idf_))

    @property
    def size(self) -> int:
        return sum(terms.size for _, terms, _ in self.parts)

    @cached_property
    def vectorizers(self) -> list[TfidfVectorizer]:
        out = []
        for kind, terms, idf in self.parts:
            vectorizer = TfidfVectorizer(sublinear_tf=True, dtype=np.float32, vocabulary=terms.index, **kind)
            vectorizer.idf_ = idf
            out.append(vectorizer)
        return out

    def transform(self, texts: pd.Series) -> sp.csr_matrix:
        if not self.parts:
            return sp.csr_matrix((len(texts), 0), dtype=np.float32)
        return sp.hstack([v.transform(texts) for v in self.vectorizers], format="csr", dtype=np.float32)

    def __getstate__(self) -> dict:
        return {"parts": self.parts}


class _OneHotWithMissing(OneHotEncoder):
    """One-hot with a missing-value column for every categorical column, present or not.

    d2l's ``get_dummies(dummy_na=True)`` always adds that column; OneHotEncoder only learns
    categories it sees, so the missing marker is appended to each column's categories here.
    ``levels``: each column's levels, when it is fit on a sample of the rows that may lack some.
    """

    def __init__(self, *, levels=None, handle_unknown="ignore", sparse_output=False, dtype=np.float32):
        super().__init__(handle_unknown=handle_unknown, sparse_output=sparse_output, dtype=dtype)
        self.levels = levels

    def fit(self, X, y=None):
        frame = pd.DataFrame(X)
        seen = self.levels or [set(frame[c]) for c in frame.columns]
        self.categories = [sorted(set(levels) - {MISSING}) + [MISSING] for levels in seen]
        return super().fit(X, y)


def _as_text(frame):
    return pd.DataFrame(frame).astype(object).where(pd.DataFrame(frame).notna(), MISSING).astype(str)


def smooth_clip(x: np.ndarray) -> np.ndarray:
    """x / sqrt(1 + x^2 / 9): about x near 0, tending to +-3 (finite for any finite input)."""
    x = np.clip(x, -1e30, 1e30)
    return 3 * x / np.hypot(3, x)


def make_transformer(numeric: list[str], categorical: list[str], scaling: str = "standard",
                     numeric_bins: int = 0, levels: list | None = None) -> ColumnTransformer:
    """Scale numeric columns then fill their NaN with 0 (the mean, or the median); one-hot
    categoricals (of ``levels``, else those it is fit on); with ``numeric_bins``, quantile
    splines of the numeric columns after them."""
    scalers = [StandardScaler()] if scaling == "standard" else \
        [RobustScaler(), FunctionTransformer(smooth_clip, feature_names_out="one-to-one")]
    splines = [("splines", QuantileSplines(numeric_bins), numeric)] if numeric_bins and numeric else []
    return ColumnTransformer(
        [
            ("numeric", make_pipeline(*scalers, SimpleImputer(strategy="constant", fill_value=0.0)), numeric),
            ("categorical", make_pipeline(
                FunctionTransformer(_as_text, feature_names_out="one-to-one"),
                _OneHotWithMissing(levels=levels),
            ), categorical),
            *splines,
        ],
        verbose_feature_names_out=False,
    )


def transformed(transformer: ColumnTransformer, frame: pd.DataFrame, path, names: list[str],
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


class Derived:
    """What each kept column becomes before scaling and one-hot encoding, fit on the rows the
    preprocessing is fit on (no labels):

    - numbers: themselves, as floats;
    - booleans: a category of two levels, false and true (one-hot);
    - a date: its year, month, day, weekday, day of year and days since 1970, its hour and
      minute when it has times, and a missing-value indicator when it has gaps;
    - a category: its levels seen at least ``min_count`` times, the ``max_levels`` most
      frequent (0: all), the others merged into one rare level; a category with more levels
      than that is also given its frequency and, for the in-fold target encoding, codes of all
      its levels;
    - a text: its length (log of characters) and words, and its TF-IDF word and bigram counts
      (a sparse matrix for the in-fold text model: never one column per distinct string).
    """

    def __init__(self, columns: list[Column], fit: pd.DataFrame, max_levels: int = 0, min_count: int = 1):
        self.columns, self.levels, self.counts, self.vectorizers, self.parts = columns, {}, {}, {}, {}
        self.named = {column.name: column for column in columns}
        self.high: list[str] = []
        for column in columns:
            values = column.read(fit[column.name])
            if column.role == "category":
                self._fit_levels(column.name, values, max_levels, min_count)
            elif column.role == "boolean":
                self.levels[column.name] = ["false", "true"]
            elif column.role == "date":
                timed = values.notna().any() and bool((values.dt.hour + values.dt.minute).fillna(0).any())
                self.parts[column.name] = ["year", "month", "day", "weekday", "dayofyear", "epoch"] \
                    + (["hour", "minute"] if timed else []) + (["missing"] if values.isna().any() else [])
            elif column.role == "text":
                self.vectorizers[column.name] = TextTerms(values.fillna(""))

    def _fit_levels(self, name: str, values: pd.Series, max_levels: int, min_count: int) -> None:
        counts = values.value_counts()
        kept = counts[counts >= min_count]
        if max_levels and len(kept) > max_levels:
            kept = kept.iloc[:max_levels]
        self.levels[name] = sorted(kept.index)
        if max_levels and len(counts) > max_levels:
            self.high.append(name)
            self.counts[name] = (Strings(list(counts.index)), counts.to_numpy(dtype=np.float64))

    def frames(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``frame`` as float columns (NaN missing) and category columns (strings, NaN missing)."""
        numbers, categories = {}, {}
        for column in self.columns:
            values = column.read(frame[column.name])
            if column.role == "number":
                numbers[column.name] = values
            elif column.role == "boolean":
                categories[column.name] = values.map({1.0: "true", 0.0: "false"})
            elif column.role == "date":
                numbers.update({f"{column.name}.{part}": _date_part(values, part) for part in self.parts[column.name]})
            elif column.role == "text":
                texts = values.fillna("")
                numbers[f"{column.name}.chars"] = np.log1p(texts.str.len()).astype(np.float64)
                numbers[f"{column.name}.words"] = texts.str.split().str.len().astype(np.float64)
            else:
                levels = set(self.levels[column.name])
                categories[column.name] = values.where(values.isna() | values.isin(levels), RARE)
                if column.name in self.counts:
                    levels, counts = self.counts[column.name]
                    seen = values.map(levels.index)
                    numbers[f"{column.name}.count"] = np.log1p(
                        pd.Series(counts[seen.fillna(0).astype(int)], index=values.index).where(seen.notna(), 0.0))
        index = frame.index
        return pd.DataFrame(numbers, index=index), pd.DataFrame(categories, index=index)

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """(rows, high-cardinality categories) codes of every level they were fit on: -1 where
        missing, -2 for a level never seen then."""
        out = np.full((len(frame), len(self.high)), -1, dtype=np.int64)
        for j, name in enumerate(self.high):
            values = self.named[name].read(frame[name])
            codes = values.map(self.counts[name][0].index).where(values.notna(), -1).fillna(-2)
            out[:, j] = codes.to_numpy(dtype=np.int64)
        return out

    def texts(self, frame: pd.DataFrame) -> list:
        """Each text column's TF-IDF matrix (scipy CSR, float32)."""
        return [vectorizer.transform(self.named[name].read(frame[name]).fillna(""))
                for name, vectorizer in self.vectorizers.items()]


def _date_part(values: pd.Series, part: str) -> pd.Series:
    if part == "missing":
        return values.isna().astype(np.float64)
    if part == "epoch":
        return (values - EPOCH) / pd.Timedelta(days=1)
    if part == "weekday":
        return values.dt.day_of_week.astype(np.float64)
    if part == "dayofyear":
        return values.dt.day_of_year.astype(np.float64)
    return getattr(values.dt, part).astype(np.float64)
