"""Column roles: what each column of a competition's tables holds, inferred once on train and
test together (or declared), and how its values read.

A role is ``number``, ``boolean``, ``date``, ``category`` or ``text``, which become features,
or ``id``, ``constant``, ``duplicate`` or ``empty``, which are dropped. Inference looks at the
values, not the CSV's dtypes: numbers stored as text are numbers (the few cells that are not
become missing, with a warning), text that parses as dates in one format is a date (the format
is found once per column), yes/no, true/false and 0/1 are booleans, strings of several words
that rarely repeat are free text, and strings or sequential integers different in every row are
ids. A target declares a role where the guess is wrong::

    columns = {date = ["arrival"], text = ["remarks"], category = ["zip"], drop = ["flight"]}
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FEATURE_ROLES = ("number", "boolean", "date", "category", "text")
DROPPED_ROLES = ("id", "constant", "duplicate", "empty", "dropped")
DECLARABLE = (*FEATURE_ROLES, "drop")

NUMERIC_SHARE = 0.95  # a text column whose cells are numbers in at least this share is numbers
MOSTLY_NUMERIC = 0.5  # ... in less, but at least this share, it stays text, with a warning
DATE_SHARE = 0.9  # ... whose cells parse as dates in one format, in at least this share, is dates
ID_SHARE = 0.99  # distinct values per non-missing cell from which single words are an id
TEXT_WORDS = 2.0  # mean words per distinct value from which rarely repeated strings are text ...
TEXT_DISTINCT = 0.3  # ... when distinct in at least this share of the cells (or of 4+ words anyway)
LONG_TEXT_WORDS = 4.0
TRUTHS = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0, "y": 1.0, "n": 0.0, "t": 1.0, "f": 0.0,
          "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}
# tried when pandas' guess from the values themselves parses too few of them
DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y", "%d/%m/%Y", "%m/%d/%Y %H:%M:%S",
                "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%d.%m.%Y", "%Y/%m/%d", "%Y%m%d", "ISO8601")
SAMPLE = 2000  # distinct values a date format is tried on
DRIFT_SHARE = 0.5  # from this share of test dates after the last train date, the split should follow time


@dataclass
class Column:
    """One column: its role, what it looked like (distinct values, missing share) and, once
    the features are built, how many features it became. ``note`` says why, or its date format."""

    name: str
    role: str
    distinct: int
    missing: float
    note: str = ""
    declared: bool = False
    date_format: str | None = None
    features: int = 0

    @property
    def kept(self) -> bool:
        return self.role in FEATURE_ROLES

    def read(self, values: pd.Series) -> pd.Series:
        """The column's cells as its role reads them: floats for numbers and booleans, datetimes
        for dates, strings (NaN missing) otherwise."""
        if self.role == "number":
            return _numbers(values)
        if self.role == "boolean":
            return _booleans(values)
        if self.role == "date":
            return _dates(values, self.date_format)
        return _strings(values)

    def row(self) -> dict:
        return {"column": self.name, "role": self.role + (" (declared)" if self.declared else ""),
                "distinct": self.distinct, "missing": f"{self.missing:.1%}", "features": self.features,
                "note": self.note}


def _strings(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), np.nan).map(lambda v: v if isinstance(v, str) else
                                                                 (v if v != v else str(v)))


def _numbers(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype(np.float64)
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(np.float64)
    return pd.to_numeric(values.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v),
                         errors="coerce").astype(np.float64)


def _booleans(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return values.astype(np.float64)
    return values.map(lambda v: TRUTHS.get(str(v).strip().lower(), np.nan) if v == v else np.nan).astype(np.float64)


def _dates(values: pd.Series, date_format: str | None) -> pd.Series:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(_strings(values), format=date_format, errors="coerce", utc=True)
    return parsed.dt.tz_localize(None)


def _date_format(values: pd.Series) -> tuple[str | None, float]:
    """The format that parses most of these strings (which must name a year), and its share."""
    sample = values.drop_duplicates()
    sample = sample.sample(min(len(sample), SAMPLE), random_state=0) if len(sample) > SAMPLE else sample
    guesses = set()
    for value in sample.iloc[:20]:
        for dayfirst in (False, True):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                guess = guess_datetime_format(value.strip(), dayfirst=dayfirst)
            if guess:
                guesses.add(guess)
    best, share = None, 0.0
    for fmt in [*sorted(guesses), *DATE_FORMATS]:
        if fmt != "ISO8601" and "%Y" not in fmt and "%y" not in fmt:
            continue  # "2-10" is a count, not a date
        parsed = _dates(sample, fmt).notna().mean()
        if parsed > share:
            best, share = fmt, float(parsed)
    return best, share


def _words(values: pd.Series) -> float:
    distinct = values.drop_duplicates()
    return float(distinct.str.split().str.len().mean()) if len(distinct) else 0.0


def infer(name: str, train: pd.Series, test: pd.Series) -> Column:
    """The role of a column from its train and test cells together."""
    both = pd.concat([train, test], ignore_index=True)
    present = both.dropna()
    distinct, missing = int(present.nunique()), float(both.isna().mean())
    column = Column(name, "category", distinct, missing)
    if train.isna().all():
        column.role, column.note = "empty", "no values in train"
    elif both.nunique(dropna=False) <= 1:
        column.role, column.note = "constant", f"always {present.iloc[0]!r}" if len(present) else ""
    elif pd.api.types.is_bool_dtype(both) or pd.api.types.is_numeric_dtype(both):
        _infer_numeric(column, present)
    else:
        _infer_strings(column, _strings(present), len(train))
    return column


def _infer_numeric(column: Column, present: pd.Series) -> None:
    values = present.astype(np.float64)
    if set(values.unique()) <= {0.0, 1.0}:
        column.role = "boolean"
    elif (values == values.round()).all() and column.distinct == len(values) and \
            values.max() - values.min() < 2 * len(values):
        column.role, column.note = "id", "a different integer in every row, nearly sequential"
    else:
        column.role = "number"


def _infer_strings(column: Column, present: pd.Series, train_rows: int) -> None:
    """``present``: the column's non-missing cells, indexed as train's rows then test's."""
    stripped = present.str.strip()
    numbers = pd.to_numeric(stripped, errors="coerce")
    lowered = set(stripped.str.lower().unique())
    if len(lowered) == 2 and lowered <= set(TRUTHS):
        column.role = "boolean"
    elif numbers.notna().mean() >= NUMERIC_SHARE:
        column.role = "number"
        if numbers.isna().any():
            column.note = f"{_not_numbers(present[numbers.isna()], train_rows)}; read as missing"
            log.warning("%s: %s", column.name, column.note)
    elif numbers.notna().mean() >= MOSTLY_NUMERIC:
        _infer_words(column, present)
        column.note = (f"{_not_numbers(present[numbers.isna()], train_rows)}; kept as text "
                       f"(over {1 - NUMERIC_SHARE:.0%} of the cells): declare columns.number to read them as numbers")
        log.warning("%s: %s", column.name, column.note)
    elif (found := _date_format(stripped))[1] >= DATE_SHARE:
        column.role, column.date_format = "date", found[0]
        column.note = f"format {found[0]}" + (f"; {1 - found[1]:.1%} of cells are not dates" if found[1] < 1 else "")
    else:
        _infer_words(column, present)


def _not_numbers(bad: pd.Series, train_rows: int, what: str = "numbers") -> str:
    """"5 test values are not numbers ('unknown')": the cells of a numeric column that are not
    (``bad``, indexed as train's rows then test's)."""
    in_test = int((bad.index >= train_rows).sum())
    sides = " and ".join(f"{n} {side}" for n, side in ((len(bad) - in_test, "train"), (in_test, "test")) if n)
    return f"{sides} values are not {what} ({', '.join(map(repr, bad.unique()[:3]))})"


def _infer_words(column: Column, present: pd.Series) -> None:
    share, words = column.distinct / len(present), _words(present)
    if share >= ID_SHARE and words < TEXT_WORDS:
        column.role, column.note = "id", "a different value in nearly every row"
    elif words >= LONG_TEXT_WORDS or (share >= TEXT_DISTINCT and words >= TEXT_WORDS):
        column.role, column.note = "text", f"{words:.1f} words a value"


@dataclass
class Columns:
    """Every feature column of a competition, in its tables' order, with its role."""

    columns: list[Column] = field(default_factory=list)

    def __iter__(self):
        return iter(self.columns)

    def named(self, role: str) -> list[str]:
        return [c.name for c in self.columns if c.role == role]

    @property
    def kept(self) -> list[Column]:
        return [c for c in self.columns if c.kept]

    def rows(self) -> list[dict]:
        return [c.row() for c in self.columns]


def column_roles(train: pd.DataFrame, test: pd.DataFrame, declared: dict | None = None,
                 where: str = "columns", time: str | None = None) -> Columns:
    """Every column's role: declared ones as declared, others inferred; a column identical to an
    earlier kept one is a duplicate. A declared role that does not fit is a one-line error. A
    date column whose test lies after its train gets a warning, unless it is the ``time`` key."""
    declared = _check_declared(declared or {}, list(train.columns), where)
    columns, seen = [], {}
    for name in train.columns:
        column = _declared(name, declared[name], train[name], test[name], where) if name in declared \
            else infer(name, train[name], test[name])
        if column.kept and not column.declared:
            key = pd.util.hash_pandas_object(pd.concat([train[name], test[name]]).astype(str), index=False).sum()
            if key in seen:
                column.role, column.note = "duplicate", f"the same values as {seen[key]!r}"
            seen.setdefault(key, name)
        if column.role == "date" and name != time:
            _check_drift(column, column.read(train[name].dropna()), column.read(test[name].dropna()))
        columns.append(column)
    return Columns(columns)


def _span(dates: pd.Series) -> str:
    return f"{dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}"


def _check_drift(column: Column, train: pd.Series, test: pd.Series) -> None:
    """Warn when most test dates come after the last train date: shuffled folds then validate
    on the past's neighbours, not on the future the test asks about, and their score flatters."""
    train, test = train.dropna(), test.dropna()
    if train.empty or test.empty:
        return
    later = float((test > train.max()).mean())
    if later < DRIFT_SHARE:
        return
    drift = (f"{later:.0%} of test dates ({_span(test)}) come after train's ({_span(train)}): "
             f"shuffled folds flatter; declare time = \"{column.name}\" and split = \"time\" to validate on the future")
    column.note = f"{column.note}; {drift}" if column.note else drift
    log.warning("%s: %s", column.name, drift)


def _check_declared(declared: dict, names: list[str], where: str) -> dict[str, str]:
    """``{role: [columns]}`` as ``{column: role}``; unknown roles, unknown columns and columns
    declared twice are one-line errors."""
    if not isinstance(declared, dict):
        raise ConfigError(f"{where}: columns must be a table of roles, e.g. {{date = [\"arrival\"]}}")
    out = {}
    for role, listed in declared.items():
        if role not in DECLARABLE:
            raise ConfigError(f"{where}: columns: unknown role {role!r} (roles: {', '.join(DECLARABLE)})")
        for name in [listed] if isinstance(listed, str) else listed:
            if name not in names:
                raise ConfigError(f"{where}: columns.{role}: no column {name!r} in the training table")
            if name in out:
                raise ConfigError(f"{where}: column {name!r} is declared both {out[name]} and {role}")
            out[name] = role
    return out


def _declared(name: str, role: str, train: pd.Series, test: pd.Series, where: str) -> Column:
    both = pd.concat([train, test], ignore_index=True)
    present = both.dropna()
    column = Column(name, "dropped" if role == "drop" else role, int(present.nunique()), float(both.isna().mean()),
                    declared=True)
    if role == "date":
        column.date_format, share = _date_format(_strings(present).str.strip())
        if share < DATE_SHARE:
            raise DataError(f"{where}: column {name!r} is declared a date, but only {share:.0%} of its values "
                            "parse as dates in one format")
        column.note = f"format {column.date_format}"
    elif role in ("number", "boolean"):
        read = column.read(present)
        if read.notna().mean() < MOSTLY_NUMERIC:
            raise DataError(f"{where}: column {name!r} is declared a {role}, but "
                            f"{read.isna().mean():.0%} of its values are not")
        if read.isna().any():
            column.note = f"{_not_numbers(present[read.isna()], len(train), role + 's')}; read as missing"
            log.warning("%s: %s", name, column.note)
    return column
