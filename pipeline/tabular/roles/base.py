"""The template every column role fills in, the registry of roles, and the cells they are
recognized by.

A role is what a column holds, and so what it becomes. Each one answers, for a column of its
own: whether inference should give it the column (:meth:`Role.claims`, asked in
:attr:`Role.priority` order, the first claim wins) or whether a declaration fits
(:meth:`Role.check`); how its cells read (:meth:`Role.read`); what it learns from the rows the
preprocessing is fit on, without labels (:meth:`Role.fit`); the features that makes
(:meth:`Role.names`, :meth:`Role.frames`); and what it hands to the encoders fit on labels
inside each fold (:meth:`Role.codes`, :meth:`Role.texts`). Nothing else tests a role's name.

A role may take several columns (:attr:`Role.takes`): a declaration's entry is then a list of
column names (``columns = {geo = [["lat", "lon"]]}``), which become one entry that derives its
features from all of them.
"""

from __future__ import annotations

import logging
from functools import cached_property

import numpy as np
import pandas as pd

from pipeline.errors import ConfigError, DataError

log = logging.getLogger(__name__)

READ_SHARE = 0.5  # cells a role must read for a declaration to fit; numbers-as-text from it are never dates

ROLES: dict = {}  # name -> the role, in registration order


def register(cls: type) -> type:
    """Class decorator: the role becomes known by its name (and its declaration keyword)."""
    ROLES[cls.name] = cls()
    return cls


def declarable() -> dict:
    """Each declaration keyword (``date``, ``drop``...) -> its role."""
    return {role.keyword: role for role in ROLES.values() if role.keyword}


def inferred() -> list:
    """The roles inference asks, in the order it asks them."""
    return sorted((role for role in ROLES.values() if role.priority is not None), key=lambda role: role.priority)


class Role:
    """One role. Roles hold no state: what a column's role learns when fit is returned by
    :meth:`fit` and handed back to the other methods as ``fitted``; per-column settings found
    at inference (a date's format) live on the column."""

    name: str
    feature = True  # becomes features; False: the column is dropped
    declarable = True  # a target may declare it
    priority: int | None = None  # where inference asks it (lowest first); None: only declared
    takes = 1  # columns an entry of its declaration names
    timeline = False  # its values are times: a table's one such column orders the time split

    @property
    def keyword(self) -> str | None:
        """What a declaration names it by; None when it cannot be declared."""
        return self.name if self.declarable else None

    def entry(self, listed, where: str) -> list[str]:
        """A declaration's entry (a column name, or a list of them) as its column names, as many
        as the role takes; anything else is a one-line error."""
        names = [listed] if isinstance(listed, str) else list(listed)
        if len(names) != self.takes:
            shape = '"a"' if self.takes == 1 else "[" + ", ".join(f'"c{i + 1}"' for i in range(self.takes)) + "]"
            raise ConfigError(f"{where}: columns.{self.keyword}: {listed!r} names {len(names)} column(s); "
                              f"{self.name} takes {self.takes} (e.g. {self.keyword} = [{shape}])")
        return names

    def claims(self, column, cells: "Cells") -> bool:
        """Whether inference makes ``column`` this role, from its ``cells``; when it does, the
        role may set the column's note (and what it keeps on it, such as a date's format)."""
        return False

    def check(self, column, cells: list["Cells"], where: str) -> None:
        """A declared column (one ``cells`` per column of the entry): a one-line DataError when
        its values cannot be this role."""

    def check_split(self, column, train: pd.DataFrame, test: pd.DataFrame, time: str | None) -> None:
        """A warning when train and test differ in a way this role can tell (a date's test rows
        after its train's); ``time`` is the declared time key."""

    def read(self, values: pd.Series, column) -> pd.Series:
        """One column's cells as this role reads them (strings, NaN missing, unless it says)."""
        return as_strings(values)

    def values(self, column, frame: pd.DataFrame) -> pd.Series | pd.DataFrame:
        """``column``'s cells in ``frame``, read: a series, or a frame of its columns for a role
        over several."""
        if len(column.sources) == 1:
            return self.read(frame[column.name], column)
        return pd.DataFrame({name: self.read(frame[name], column) for name in column.sources}, index=frame.index)

    def fit(self, column, values, **options) -> object:
        """What the role learns from the values of the rows the preprocessing is fit on (no
        labels); ``options``: the preprocessing's params a role may use (``max_levels``,
        ``min_count``)."""
        return None

    def names(self, column, fitted) -> list[str]:
        """The derived columns :meth:`frames` makes, numbers and categories."""
        return []

    def frames(self, column, fitted, values) -> tuple[dict, dict]:
        """The derived columns of these values: ({name: floats}, {name: strings}), NaN missing."""
        return {}, {}

    def levels(self, column, fitted) -> dict:
        """Each derived category's levels."""
        return {}

    def codes(self, column, fitted, frame: pd.DataFrame) -> list[np.ndarray]:
        """Integer codes (rows,) for the in-fold target encoding: -1 missing, -2 unseen."""
        return []

    def texts(self, column, fitted, frame: pd.DataFrame) -> list:
        """Sparse matrices (rows, terms) for the in-fold text model."""
        return []

    def remark(self, fitted) -> str:
        """What the columns table says of a fit column (its in-fold parts)."""
        return ""


class Cells:
    """One column's cells in train and test together, and what inference asks of them; each
    fact is computed when first asked, so a column of numbers never has its date formats tried.
    A role that declines may leave a ``remark``, which becomes the note of whatever claims it."""

    def __init__(self, train: pd.Series, test: pd.Series):
        self.train, self.test, self.train_rows = train, test, len(train)
        self.both = pd.concat([train, test], ignore_index=True)
        self.present = self.both.dropna()  # indexed as train's rows then test's
        self.distinct, self.missing = int(self.present.nunique()), float(self.both.isna().mean())
        self.remark = ""

    @cached_property
    def numeric(self) -> bool:
        """Numbers (or booleans) by dtype, in both tables."""
        return pd.api.types.is_bool_dtype(self.both) or pd.api.types.is_numeric_dtype(self.both)

    @cached_property
    def sequential(self) -> bool:
        """Numeric cells that are a different integer in every row, nearly sequential: row numbers."""
        values = self.present.astype(np.float64)
        return bool((values == values.round()).all() and self.distinct == len(values)
                    and values.max() - values.min() < 2 * len(values))

    @cached_property
    def strings(self) -> pd.Series:
        return as_strings(self.present)

    @cached_property
    def stripped(self) -> pd.Series:
        return self.strings.str.strip()

    @cached_property
    def numbers(self) -> pd.Series:
        """The cells as numbers, NaN where they are not."""
        return pd.to_numeric(self.stripped, errors="coerce")

    @property
    def number_share(self) -> float:
        return float(self.numbers.notna().mean())

    @property
    def mostly_numbers(self) -> bool:
        """Numbers in at least READ_SHARE of the cells: numbers with stray words, never dates."""
        return not self.numeric and self.number_share >= READ_SHARE

    @property
    def distinct_share(self) -> float:
        return self.distinct / len(self.present)

    @cached_property
    def words(self) -> float:
        """Mean words per distinct value."""
        distinct = self.strings.drop_duplicates()
        return float(distinct.str.split().str.len().mean()) if len(distinct) else 0.0


def as_strings(values: pd.Series) -> pd.Series:
    """Cells as strings, NaN missing (a number becomes its text)."""
    return values.astype(object).where(values.notna(), np.nan).map(lambda v: v if isinstance(v, str) else
                                                                 (v if v != v else str(v)))


def as_numbers(values: pd.Series) -> pd.Series:
    """Cells as floats: text is stripped, and what is not a number is NaN."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype(np.float64)
    return pd.to_numeric(values.astype(object).map(lambda v: v.strip() if isinstance(v, str) else v),
                         errors="coerce").astype(np.float64)


def unread(bad: pd.Series, train_rows: int, what: str = "numbers") -> str:
    """"5 test values are not numbers ('unknown')": the cells a role cannot read (``bad``,
    indexed as train's rows then test's)."""
    in_test = int((bad.index >= train_rows).sum())
    sides = " and ".join(f"{n} {side}" for n, side in ((len(bad) - in_test, "train"), (in_test, "test")) if n)
    return f"{sides} values are not {what} ({', '.join(map(repr, bad.unique()[:3]))})"


def check_reads(column, cells: Cells, where: str, what: str) -> None:
    """A declared column must read as its role in at least READ_SHARE of its cells (a one-line
    DataError otherwise); the cells it cannot read become missing, with a warning."""
    read = column.read(cells.present)
    if read.notna().mean() < READ_SHARE:
        raise DataError(f"{where}: column {column.name!r} is declared a {column.role}, but "
                        f"{read.isna().mean():.0%} of its values are not {what}")
    if read.isna().any():
        column.note = f"{unread(cells.present[read.isna()], cells.train_rows, what)}; read as missing"
        log.warning("%s: %s", column.name, column.note)
