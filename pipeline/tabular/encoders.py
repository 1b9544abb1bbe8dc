"""The scikit-learn transformers this package adds, and the loop that asks each column's role
for its derived columns.

scikit-learn scales, imputes and one-hot encodes; what it lacks is here: a one-hot with d2l's
missing-value column, per-column quantile splines, RealMLP's smooth clipping, a text's TF-IDF
terms kept compactly (:class:`TextTerms`), and :class:`Derived`, which gathers what each
column's role (:mod:`pipeline.tabular.roles`) derives: a date's parts, a text's length and
words, a category's levels with the rare ones merged, and its frequency...
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, RobustScaler, SplineTransformer, StandardScaler

from pipeline.errors import DataError

if TYPE_CHECKING:
    from pipeline.tabular.columns import Column

MISSING = "<missing>"  # the category that stands for NaN, as d2l's get_dummies(dummy_na=True)
RARE = "<rare>"  # the category of levels seen too rarely, or beyond the most frequent max_levels
EPOCH = pd.Timestamp("1970-01-01")
# A text's terms: word unigrams and bigrams seen in at least 2 texts and character 2-5 grams
# (within words) seen in at least 3, sublinear counts. On strikes' remarks a logistic regression
# on the words alone scores AUC 0.789 in 5-fold CV, on both 0.795; as the in-fold text model
# beside the other columns, the auto recipe's CV went from 0.9010 to 0.9049. Words of one
# character count (scikit-learn's default pattern drops them): a report's "2 GULLS" or "HIT 3"
# says more than one animal; the auto recipe's CV on strikes at fold seeds 0 and 1 went from
# 0.9045, 0.9041 to 0.9071, 0.9063 (python benchmarks/before_after.py).
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
    each vectorizer's params, terms and idf, and rebuilt from them when first used. ``words``:
    the most frequent word terms, at most ``words`` of them, that :meth:`indicators` marks."""

    KINDS = ({"ngram_range": (1, 2), "min_df": 2, "token_pattern": r"(?u)\b\w+\b"},
             {"analyzer": "char_wb", "ngram_range": (2, 5), "min_df": 3})

    def __init__(self, texts: pd.Series, words: int = 0):
        self.parts = []
        for kind in self.KINDS:
            vectorizer = TfidfVectorizer(sublinear_tf=True, max_features=TEXT_VOCABULARY, dtype=np.float32, **kind)
            try:
                vectorizer.fit(texts)
            except ValueError:  # too few texts for min_df, or nothing but blanks: no terms of this kind
                continue
            terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
            self.parts.append((kind, Strings(terms), vectorizer.idf_))
        self.words = self._frequent(words)

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

    def _frequent(self, count: int) -> list[str]:
        """The ``count`` word terms in the most texts (the lowest idf), most frequent first."""
        if count <= 0 or not self.parts or "analyzer" in self.parts[0][0]:  # no word terms
            return []
        _, terms, idf = self.parts[0]
        names = terms.joined.split(terms.SEPARATOR)
        return [names[i] for i in np.argsort(idf, kind="stable")[:count]]

    def indicators(self, texts: pd.Series) -> np.ndarray:
        """(texts, words) float32: 1 where a text holds the word term, else 0."""
        if not self.words:
            return np.zeros((len(texts), 0), np.float32)
        counter = CountVectorizer(binary=True, vocabulary=self.words, dtype=np.float32, **self.parts[0][0])
        return counter.transform(texts).toarray()  # only the chosen words' columns: bounded by WORD_CELLS

    def __getstate__(self) -> dict:
        return {"parts": self.parts, "words": self.words}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"words": [], **state})  # saved before text_words: none


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
    preprocessing is fit on (no labels): each column's role (:mod:`pipeline.tabular.roles`)
    fits it and derives its columns; this keeps what the roles learned and gathers what they
    make, in the columns' order. ``max_levels`` and ``min_count`` are the categories',
    ``text_words`` the free texts' (see :class:`pipeline.tabular.features.FeatureParams`)."""

    def __init__(self, columns: list[Column], fit: pd.DataFrame, max_levels: int = 0, min_count: int = 1,
                 text_words: int = 0):
        self.columns = columns
        self.fitted = {c.name: c.kind.fit(c, c.values(fit), max_levels=max_levels, min_count=min_count,
                                          text_words=text_words)
                       for c in columns}
        self.levels = {name: levels for c in columns for name, levels in c.kind.levels(c, self.fitted[c.name]).items()}

    def frames(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``frame`` as float columns (NaN missing) and category columns (strings, NaN missing)."""
        numbers, categories = {}, {}
        for column in self.columns:
            more, levels = column.kind.frames(column, self.fitted[column.name], column.values(frame))
            numbers.update(more)
            categories.update(levels)
        index = frame.index
        return pd.DataFrame(numbers, index=index), pd.DataFrame(categories, index=index)

    def names(self, column: Column) -> list[str]:
        """The derived columns ``column`` makes (none for a column that is not kept)."""
        return column.kind.names(column, self.fitted[column.name]) if column.name in self.fitted else []

    def remark(self, column: Column) -> str:
        """What the columns table says of the fit column (its in-fold parts), if anything."""
        return column.kind.remark(self.fitted[column.name]) if column.name in self.fitted else ""

    def codes(self, frame: pd.DataFrame) -> np.ndarray:
        """(rows, high-cardinality categories) codes of every level they were fit on: -1 where
        missing, -2 for a level never seen then."""
        codes = [code for c in self.columns for code in c.kind.codes(c, self.fitted[c.name], frame)]
        return np.stack(codes, 1) if codes else np.full((len(frame), 0), -1, dtype=np.int64)

    def texts(self, frame: pd.DataFrame) -> list:
        """Each text column's TF-IDF matrix (scipy CSR, float32)."""
        return [matrix for c in self.columns for matrix in c.kind.texts(c, self.fitted[c.name], frame)]
