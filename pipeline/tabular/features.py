"""Tabular features: checked tables -> float32 tensors, with scikit-learn's transformers.

Each column is given a role (:mod:`pipeline.tabular.columns`) and derives its features by it
(:mod:`pipeline.tabular.roles`, gathered by :class:`pipeline.tabular.encoders.Derived`);
scikit-learn scales and imputes the numbers and one-hot encodes the categories
(ColumnTransformer, StandardScaler, SimpleImputer, OneHotEncoder). Values that cannot become
finite float32 features are a one-line :class:`DataError`. The features use no labels: what
does (a target encoding, a text model) is fit inside each fold (:mod:`pipeline.tabular.infold`).
"""

from __future__ import annotations

from collections import Counter

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.compose import ColumnTransformer

from pipeline import checkpoints
from pipeline.errors import DataError, ParamError, shown
from pipeline.tabular.columns import Column, Columns, column_roles
from pipeline.tabular.encoders import EPOCH, RARE, Derived, _as_text, make_transformer, skewed_columns, transformed
from pipeline.tabular.tables import TableSpec, Tables

FIT_ON = ("all", "train")
CHUNK_ROWS = 50_000  # rows featurized at once
FIT_ROWS = 50_000  # rows the scalers and splines are fit on, at most: their means and quantiles
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
    linear models and MLPs get non-linear effects of a number for free (0 turns it off);
    ``auto``: 32 up to 20,000 rows, fewer as rows grow (see :func:`bins_for`).
    ``roles``: infer each column's role from its values (dates, free text, booleans, ids...);
    off, every numeric column is a number and every other a category (d2l's way).
    ``max_levels``: one-hot a category's most frequent levels only (0: all), the rest merged
    into a rare level, and give a category with more levels its frequency and an in-fold target
    encoding. ``min_count``: merge levels seen fewer times than this into the rare level.
    ``text_words``: also give each free-text column's most frequent terms (words and pairs of
    words), this many at most, as 0/1 columns, which trees split on beside the in-fold text model's
    score (0 turns it off; fewer on large tables: see :mod:`pipeline.tabular.roles.text`).
    """

    fit_on: str = "all"
    log_skewed: float = 0.0
    clip_quantile: float = 0.0
    scaling: str = "standard"
    numeric_bins: int | str = 0
    roles: bool = True
    max_levels: int = 64
    min_count: int = 5
    text_words: int = 0

    def __post_init__(self):
        if self.fit_on not in FIT_ON:
            raise ParamError("fit_on", self.fit_on, f"not one of {', '.join(FIT_ON)}")
        if self.scaling not in SCALINGS:
            raise ParamError("scaling", self.scaling, f"not one of {', '.join(SCALINGS)}")
        if not 0 <= self.clip_quantile < 0.5:
            raise ParamError("clip_quantile", self.clip_quantile, "must be in [0, 0.5)")
        if self.numeric_bins != "auto" and (not isinstance(self.numeric_bins, int) or self.numeric_bins < 0
                                            or self.numeric_bins == 1):
            raise ParamError("numeric_bins", self.numeric_bins, "must be 0 (off), at least 2, or auto")
        if self.max_levels < 0:
            raise ParamError("max_levels", self.max_levels, "must be 0 (every level) or more")
        if self.min_count < 1:
            raise ParamError("min_count", self.min_count, "must be at least 1")
        if not isinstance(self.text_words, int) or isinstance(self.text_words, bool) or self.text_words < 0:
            raise ParamError("text_words", self.text_words, "must be 0 (off) or a number of words")


@dataclass
class Encoded:
    """One frame's features: ``dense`` (scaled numbers, one-hot categories) for torch and linear
    models, ``native`` (numbers as they are, category codes; NaN missing) for trees, ``codes``
    of the high-cardinality categories and ``texts`` (TF-IDF matrices) for the in-fold encoders."""

    dense: np.ndarray
    native: np.ndarray
    codes: np.ndarray
    texts: list


@dataclass
class Features:
    """Model-ready tensors. ``y`` is float32 for regression, int64 class indices otherwise
    (sorted, the declared positive class last).

    ``X`` holds scaled numeric columns and one-hot categories, for torch and linear models;
    ``native`` the columns as they are, for trees: numbers with NaN where missing, categories as
    codes (NaN missing) in the columns listed in ``native_categorical``. ``codes`` and ``texts``
    (and their test rows') feed the encoders fit on labels inside each fold; ``columns`` says
    what each column of the tables became.
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
    codes: torch.Tensor | None = None
    codes_test: torch.Tensor | None = None
    texts: list = field(default_factory=list)
    texts_test: list = field(default_factory=list)
    columns: list[dict] = field(default_factory=list)
    groups: torch.Tensor | None = None  # each training row's group (the group split)
    times: torch.Tensor | None = None  # each training row's time in days, NaN unknown (the time split)
    train_ids: list = field(default_factory=list)  # what a run's out-of-fold predictions are keyed by

    @property
    def plain_width(self) -> int:
        """Dense columns that are not quantile splines (they come first)."""
        return self.X.shape[1] if self.builder is None else self.builder.plain_width

    def to_state(self) -> dict:
        """A dict of tensors and plain values, loadable with ``torch.load(weights_only=True)``."""
        state = {k: v for k, v in vars(self).items() if k not in ("spec", "builder", "texts", "texts_test")}
        return {**state, "spec": asdict(self.spec), "builder": checkpoints.pack(self.builder),
                "texts": [_csr_state(m) for m in self.texts], "texts_test": [_csr_state(m) for m in self.texts_test]}

    @classmethod
    def from_state(cls, state: dict) -> "Features":
        state = dict(state)
        state["spec"] = TableSpec(**state["spec"])
        state["builder"] = checkpoints.unpack(state["builder"])
        state["texts"], state["texts_test"] = ([_csr(m) for m in state[k]] for k in ("texts", "texts_test"))
        return cls(**state)


def _csr_state(matrix: sp.csr_matrix) -> dict:
    return {"shape": list(matrix.shape), "indptr": torch.from_numpy(matrix.indptr.astype(np.int64)),
            "indices": torch.from_numpy(matrix.indices.astype(np.int64)), "data": torch.from_numpy(matrix.data)}


def _csr(state: dict) -> sp.csr_matrix:
    return sp.csr_matrix((state["data"].numpy(), state["indices"].numpy(), state["indptr"].numpy()),
                         shape=tuple(state["shape"]))


def dtype_roles(train: pd.DataFrame, test: pd.DataFrame) -> Columns:
    """d2l's roles: a column numeric in both tables is a number, any other a category."""
    numeric = [pd.api.types.is_numeric_dtype(train[c]) and pd.api.types.is_numeric_dtype(test[c])
               for c in train.columns]
    both = pd.concat([train, test])
    return Columns([Column(c, "number" if n else "category", int(both[c].nunique()), float(both[c].isna().mean()))
                    for c, n in zip(train.columns, numeric)])


def bins_for(rows: int) -> int:
    """``numeric_bins = "auto"``: 32 up to 20,000 rows, then fewer as the square root of the rows
    grows (14 at 100,000, 10 at 200,000, 4 from 1,280,000): with more rows an MLP learns a
    number's shape itself, and each bin is a column of every row. The auto recipe's MLP on a
    generated 200,000-row table: AUC 0.8233 with 32 bins (1,206 features, 29 s), 0.8247 with 8
    (512 features, 18 s)."""
    return int(min(32, max(4, round(32 * (20_000 / max(rows, 1)) ** 0.5))))


class FeatureBuilder:
    """The preprocessing fit on a competition's tables: each column's role and derived columns,
    the winsorizing bounds, the log1p'd columns and scikit-learn's fitted transformer. It turns
    any frame with the same columns (the training rows, the test rows, a later test file) into
    features, so a saved model predicts new rows."""

    def __init__(self, tables: Tables, params: FeatureParams):
        train, test = tables.train, tables.test
        self.params, self.source = params, list(train.columns)
        self.roles = column_roles(train, test, tables.spec.columns, str(tables.train_path), tables.spec.time) \
            if params.roles else dtype_roles(train, test)
        fit = pd.concat([train, test]) if params.fit_on == "all" else train
        self.derived = Derived(self.roles.kept, fit, params.max_levels, params.min_count, params.text_words)
        made = Counter(name for column in self.roles.kept for name in self.derived.names(column))
        if made and made.most_common(1)[0][1] > 1:  # one would overwrite the other
            raise DataError(f"{tables.train_path}: two features get the same name ({made.most_common(1)[0][0]!r}); "
                            "rename the column")
        numbers, categories = self.derived.frames(fit)
        self.numeric, self.categorical = list(numbers.columns), list(categories.columns)
        self.bounds = None
        if params.clip_quantile and self.numeric:
            self.bounds = tuple(numbers.quantile(q).to_dict() for q in (params.clip_quantile, 1 - params.clip_quantile))
        numbers = self._clipped(numbers)
        self.logged = skewed_columns(numbers, self.numeric, params.log_skewed)
        self.transformer = self._fit_transformer(pd.concat([self._logged(numbers), categories], axis=1), tables)
        try:
            self.names = list(self.transformer.get_feature_names_out())
        except ValueError as exc:  # e.g. a numeric column "Color_red" beside a category Color == "red"
            raise DataError(f"{tables.train_path}: two features get the same name "
                            f"({str(exc).split(' are not unique')[0].removeprefix('Output feature names: ')}); "
                            "rename the column") from None
        self.native_categories = {c: [*self.derived.levels[c], RARE] for c in self.categorical}

    def _clipped(self, numbers: pd.DataFrame) -> pd.DataFrame:
        if self.bounds is None:
            return numbers
        low, high = self.bounds
        return numbers.assign(**{c: numbers[c].clip(low[c], high[c]) for c in self.numeric})

    def _logged(self, numbers: pd.DataFrame) -> pd.DataFrame:
        return numbers.assign(**{c: np.log1p(numbers[c]) for c in self.logged}) if self.logged else numbers

    def _fit_transformer(self, fit_frame: pd.DataFrame, tables: Tables) -> ColumnTransformer:
        """scikit-learn's transformer, fit on at most FIT_ROWS of the rows (a ColumnTransformer's
        fit transforms every row it is given, in float64), with every category's levels."""
        levels = [set(_as_text(fit_frame[[c]]).iloc[:, 0]) for c in self.categorical]
        sample = fit_frame if len(fit_frame) <= FIT_ROWS else fit_frame.sample(FIT_ROWS, random_state=0)
        with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
            # Overflow is reported below, per column (the imputer would drop the scaler's NaN column).
            warnings.filterwarnings("ignore", message="Skipping features without any observed values")
            bins = bins_for(len(tables.train)) if self.params.numeric_bins == "auto" else self.params.numeric_bins
            transformer = make_transformer(self.numeric, self.categorical, self.params.scaling, bins,
                                           levels).fit(sample)
        if self.numeric and self.params.scaling == "standard":  # a sum or a sum of squares beyond float64
            scaler = transformer.named_transformers_["numeric"][0]
            overflow = np.flatnonzero(~(np.isfinite(scaler.mean_) & np.isfinite(scaler.var_)))
            if len(overflow):
                column = self.numeric[int(overflow[0])]
                path = tables.test_path if column in tables.test and \
                    tables.test[column].abs().max() > tables.train[column].abs().max() else tables.train_path
                raise DataError(f"{path}: column {column!r} has values too large to standardize; "
                                "rescale it (e.g. take its log)")
        return transformer

    def transform(self, frame: pd.DataFrame, path) -> Encoded:
        """``frame``'s features (see :class:`Encoded`), a chunk of rows at a time: scikit-learn's
        transformers work in float64, and a whole 200,000-row table of 1,206 features took 5.2 GB."""
        frame = frame.reset_index(drop=True)  # rows by position, whatever index the frame came with
        dense = np.empty((len(frame), len(self.names)), dtype=np.float32)
        native = np.empty((len(frame), len(self.native_names)), dtype=np.float32)
        for start in range(0, len(frame), CHUNK_ROWS):
            part = frame.iloc[start:start + CHUNK_ROWS]
            numbers, categories = self.derived.frames(part)
            scaled = pd.concat([self._logged(self._clipped(numbers)), categories], axis=1)
            dense[start:start + len(part)] = transformed(self.transformer, scaled, path, self.names, self.numeric)
            native[start:start + len(part)] = self._native(numbers, categories)
        return Encoded(dense, native, self.derived.codes(frame), self.derived.texts(frame))

    def _native(self, numbers: pd.DataFrame, categories: pd.DataFrame) -> np.ndarray:
        codes = [pd.Categorical(categories[c], categories=self.native_categories[c]).codes
                 for c in self.categorical]
        codes = np.stack(codes, 1).astype(np.float32) if codes else np.zeros((len(numbers), 0), np.float32)
        codes[codes < 0] = np.nan
        return np.ascontiguousarray(np.concatenate([numbers.to_numpy(dtype=np.float32), codes], 1))

    @property
    def plain_width(self) -> int:
        """Dense columns before the numbers' quantile splines, which come last: the scaled
        numbers and the one-hot categories."""
        splines = self.transformer.named_transformers_.get("splines")
        return len(self.names) - (0 if splines is None else len(splines.get_feature_names_out()))

    @property
    def native_names(self) -> list[str]:
        return self.numeric + self.categorical

    def column_rows(self) -> list[dict]:
        """The columns table: each column's role, distinct values, missing share, and the dense
        features it became."""
        made = dict(zip(self.numeric + self.categorical, self._dense_counts()))
        for column in self.roles:
            column.features = sum(made[name] for name in self.derived.names(column))
            remark = self.derived.remark(column)
            if remark:
                column.note = f"{remark}; {column.note}" if column.note else remark
        return self.roles.rows()

    def _dense_counts(self) -> list[int]:
        """Dense features per derived column: a scaled number and its splines, or a one-hot."""
        counts = [1] * len(self.numeric)
        if "splines" in self.transformer.named_transformers_:
            splines = self.transformer.named_transformers_["splines"]
            for j, spline in splines.splines_.items():
                counts[j] += spline.n_features_out_
            for j in splines.missing_:
                counts[j] += 1
        onehot = self.transformer.named_transformers_["categorical"][-1] if self.categorical else None
        return counts + ([len(c) for c in onehot.categories_] if onehot is not None else [])


def split_columns(tables: Tables, roles: Columns) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Each training row's group code (the declared group column) and time in days (the declared
    time column, else the table's one date column), for the group and time splits."""
    spec, groups, times = tables.spec, None, None
    if spec.group is not None:
        groups = torch.from_numpy(pd.factorize(tables.train[spec.group].astype(str))[0].astype(np.int64))
    dates = [c for c in roles if c.kind.timeline]
    time = spec.time or (dates[0].name if len(dates) == 1 else None)
    if time is not None:  # the declared time key is read as a date whatever its role
        column = next((c for c in dates if c.name == time), None) or Column(time, "date", 0, 0.0)
        when = column.read(tables.train[time])
        times = torch.from_numpy(np.array((when - EPOCH) / pd.Timedelta(days=1), dtype=np.float64))
    return groups, times


def build_features(tables: Tables, params: FeatureParams = FeatureParams()) -> Features:
    """Fit the preprocessing on train+test features (or train only) and return tensors."""
    builder = FeatureBuilder(tables, params)
    train, test = (builder.transform(frame, path) for frame, path in
                   ((tables.train, tables.train_path), (tables.test, tables.test_path)))
    y, classes = tables.spec.scorer.task.encode(tables.labels, tables.spec.positive, str(tables.train_path))
    groups, times = split_columns(tables, builder.roles)
    return Features(
        X=torch.from_numpy(train.dense), y=torch.from_numpy(y), X_test=torch.from_numpy(test.dense),
        test_ids=[shown(i) for i in tables.test_ids], names=builder.names, spec=tables.spec, classes=classes,
        native=torch.from_numpy(train.native), native_test=torch.from_numpy(test.native),
        native_names=builder.native_names,
        native_categorical=list(range(len(builder.numeric), len(builder.native_names))), builder=builder,
        codes=torch.from_numpy(train.codes), codes_test=torch.from_numpy(test.codes),
        texts=train.texts, texts_test=test.texts, columns=builder.column_rows(),
        groups=groups, times=times, train_ids=[] if tables.train_ids is None else [shown(i) for i in tables.train_ids])
