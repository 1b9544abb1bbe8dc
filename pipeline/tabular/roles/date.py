"""Dates: text that parses as dates in one format, which is found once per column (and must
name a year: "2-10" is a count). A date becomes its parts: year, month, day, weekday, day of
year and days since 1970, its hour and minute when it has times, and a missing indicator when
it has gaps. A date whose test rows come after its train rows is warned about: shuffled folds
would then validate on the past's neighbours, not on the future the test asks about."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from pandas.tseries.api import guess_datetime_format

from pipeline.errors import DataError
from pipeline.tabular.encoders import EPOCH
from pipeline.tabular.roles.base import Role, as_strings, register

log = logging.getLogger(__name__)

DATE_SHARE = 0.9  # a text column whose cells parse as dates in one format, in at least this share, is dates
# tried when pandas' guess from the values themselves parses too few of them
DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y", "%d/%m/%Y", "%m/%d/%Y %H:%M:%S",
                "%d/%m/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%d.%m.%Y", "%Y/%m/%d", "%Y%m%d", "ISO8601")
SAMPLE = 2000  # distinct values a date format is tried on
DRIFT_SHARE = 0.5  # from this share of test dates after the last train date, the split should follow time
PARTS = ("year", "month", "day", "weekday", "dayofyear", "epoch")


@register
class Date(Role):
    name = "date"
    priority = 50
    timeline = True

    def claims(self, column, cells) -> bool:
        if cells.numeric or cells.mostly_numbers:
            return False
        fmt, share = date_format(cells.stripped)
        if share < DATE_SHARE:
            return False
        column.date_format = fmt
        column.note = f"format {fmt}" + (f"; {1 - share:.1%} of cells are not dates" if share < 1 else "")
        return True

    def check(self, column, cells, where: str) -> None:
        column.date_format, share = date_format(cells[0].stripped)
        if share < DATE_SHARE:
            raise DataError(f"{where}: column {column.name!r} is declared a date, but only {share:.0%} of its values "
                            "parse as dates in one format")
        column.note = f"format {column.date_format}"

    def check_split(self, column, train: pd.DataFrame, test: pd.DataFrame, time: str | None) -> None:
        if column.name != time:
            _check_drift(column, column.read(train[column.name].dropna()), column.read(test[column.name].dropna()))

    def read(self, values, column):
        return dates(values, column.date_format)

    def fit(self, column, values, **options) -> list[str]:
        """The parts the fit rows have: hour and minute only with times, missing only with gaps."""
        timed = values.notna().any() and bool((values.dt.hour + values.dt.minute).fillna(0).any())
        return [*PARTS, *(["hour", "minute"] if timed else []), *(["missing"] if values.isna().any() else [])]

    def names(self, column, fitted: list[str]) -> list[str]:
        return [f"{column.name}.{part}" for part in fitted]

    def frames(self, column, fitted: list[str], values) -> tuple[dict, dict]:
        return {f"{column.name}.{part}": _part(values, part) for part in fitted}, {}


def dates(values: pd.Series, fmt: str | None) -> pd.Series:
    """Cells as naive datetimes in format ``fmt``, NaT where they are not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(as_strings(values), format=fmt, errors="coerce", utc=True)
    return parsed.dt.tz_localize(None)


def date_format(values: pd.Series) -> tuple[str | None, float]:
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
        parsed = dates(sample, fmt).notna().mean()
        if parsed > share:
            best, share = fmt, float(parsed)
    return best, share


def _part(values: pd.Series, part: str) -> pd.Series:
    if part == "missing":
        return values.isna().astype(np.float64)
    if part == "epoch":
        return (values - EPOCH) / pd.Timedelta(days=1)
    if part == "weekday":
        return values.dt.day_of_week.astype(np.float64)
    if part == "dayofyear":
        return values.dt.day_of_year.astype(np.float64)
    return getattr(values.dt, part).astype(np.float64)


def _span(dates: pd.Series) -> str:
    return f"{dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}"


def _check_drift(column, train: pd.Series, test: pd.Series) -> None:
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
