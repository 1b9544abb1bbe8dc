"""Columns and their roles: what each column of a competition's tables holds, inferred once on
train and test together (or declared), asked of the roles in :mod:`pipeline.tabular.roles`.

Inference looks at the values, not the CSV's dtypes: each role, in its order, says whether the
cells are its own (numbers stored as text are numbers, text that parses as dates in one format
is a date, yes/no is a boolean, strings of several words that rarely repeat are free text,
values different in every row are ids...). A target declares a role where the guess is wrong,
one column an entry, or a list of columns for a role that takes several::

    columns = {date = ["arrival"], text = ["remarks"], drop = ["flight"], geo = [["lat", "lon"]]}

A role over several columns is one entry (``lat+lon``) whose features come from all of them;
its columns are not used alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pipeline.errors import ConfigError
from pipeline.tabular.roles import ROLES, Cells, Role, declarable, inferred


@dataclass
class Column:
    """One column (or the columns of a role over several, as ``members``): its role's name,
    what it looked like (distinct values, missing share) and, once the features are built, how
    many features it became. ``note`` says why, or its date format."""

    name: str
    role: str
    distinct: int
    missing: float
    note: str = ""
    declared: bool = False
    date_format: str | None = None
    features: int = 0
    members: list["Column"] = field(default_factory=list)

    @property
    def kind(self) -> Role:
        """The role itself (:mod:`pipeline.tabular.roles`), which the other methods ask."""
        return ROLES[self.role]

    @property
    def kept(self) -> bool:
        return self.kind.feature

    @property
    def sources(self) -> list[str]:
        """The table's columns it reads."""
        return [m.name for m in self.members] or [self.name]

    def read(self, values: pd.Series) -> pd.Series:
        """One column's cells as its role reads them: floats for numbers and booleans, datetimes
        for dates, strings (NaN missing) otherwise."""
        return self.kind.read(values, self)

    def values(self, frame: pd.DataFrame) -> pd.Series | pd.DataFrame:
        """Its cells in ``frame``, read (a frame of its columns for a role over several)."""
        return self.kind.values(self, frame)

    def row(self) -> dict:
        return {"column": self.name, "role": self.role + (" (declared)" if self.declared else ""),
                "distinct": self.distinct, "missing": f"{self.missing:.1%}", "features": self.features,
                "note": self.note}

    def rows(self) -> list[dict]:
        """Its rows of the columns table: one per table column, the features on the first."""
        if not self.members:
            return [self.row()]
        note = f"part of {self.name}" + (f"; {self.note}" if self.note else "")
        return [{**m.row(), "features": self.features if i == 0 else 0,
                 "note": note + (f"; {m.note}" if m.note else "")} for i, m in enumerate(self.members)]


@dataclass
class Columns:
    """Every feature column of a competition, in its tables' order, with its role."""

    columns: list[Column] = field(default_factory=list)

    def __iter__(self):
        return iter(self.columns)

    @property
    def kept(self) -> list[Column]:
        return [c for c in self.columns if c.kept]

    def rows(self) -> list[dict]:
        return [row for c in self.columns for row in c.rows()]


def infer(name: str, train: pd.Series, test: pd.Series) -> Column:
    """The role of a column from its train and test cells together: the first role to claim it."""
    cells = Cells(train, test)
    column = Column(name, "", cells.distinct, cells.missing)
    for role in inferred():
        if role.claims(column, cells):
            column.role = role.name
            break
    if cells.remark:
        column.note = cells.remark
    return column


def column_roles(train: pd.DataFrame, test: pd.DataFrame, declared: dict | None = None,
                 where: str = "columns", time: str | None = None) -> Columns:
    """Every column's role: declared ones as declared, others inferred; a column identical to an
    earlier kept one is a duplicate. A declared role that does not fit is a one-line error. Each
    role may warn of how test differs from train (a date whose test lies after its train,
    unless it is the ``time`` key)."""
    entries = _check_declared(declared or {}, list(train.columns), where)
    grouped = {name for _, names in entries.values() for name in names}
    columns, seen = [], {}
    for name in train.columns:
        if name in entries:
            column = _declared(*entries[name], train, test, where)
        elif name in grouped:
            continue  # a column of a role over several, which its first column stands for
        else:
            column = infer(name, train[name], test[name])
        if column.kept and not column.declared:
            key = pd.util.hash_pandas_object(pd.concat([train[name], test[name]]).astype(str), index=False).sum()
            if key in seen:
                column.role, column.note = "duplicate", f"the same values as {seen[key]!r}"
            seen.setdefault(key, name)
        column.kind.check_split(column, train, test, time)
        columns.append(column)
    return Columns(columns)


def _check_declared(declared: dict, names: list[str], where: str) -> dict[str, tuple[Role, list[str]]]:
    """``{role: [entries]}`` as ``{first column of an entry: (role, its columns)}``; unknown
    roles, entries of the wrong size, unknown columns and columns declared twice are one-line
    errors."""
    if not isinstance(declared, dict):
        raise ConfigError(f"{where}: columns must be a table of roles, e.g. {{date = [\"arrival\"]}}")
    roles, out, taken = declarable(), {}, {}
    for keyword, listed in declared.items():
        if keyword not in roles:
            raise ConfigError(f"{where}: columns: unknown role {keyword!r} (roles: {', '.join(roles)})")
        for entry in [listed] if isinstance(listed, str) else listed:
            entry = roles[keyword].entry(entry, where)
            for name in entry:
                if name not in names:
                    raise ConfigError(f"{where}: columns.{keyword}: no column {name!r} in the training table")
                if name in taken:
                    raise ConfigError(f"{where}: column {name!r} is declared both {taken[name]} and {keyword}")
                taken[name] = keyword
            out[min(entry, key=names.index)] = (roles[keyword], entry)
    return out


def _declared(role: Role, names: list[str], train: pd.DataFrame, test: pd.DataFrame, where: str) -> Column:
    """The column (or the columns, as one) a declaration gives ``role``, checked by it."""
    cells = [Cells(train[name], test[name]) for name in names]
    members = [Column(name, role.name, c.distinct, c.missing, declared=True) for name, c in zip(names, cells)]
    column = members[0]
    if len(members) > 1:
        both = pd.concat([train[names], test[names]], ignore_index=True)
        column = Column("+".join(names), role.name, len(both.dropna().drop_duplicates()),
                        float(both.isna().any(axis=1).mean()), declared=True, members=members)
    role.check(column, cells, where)
    return column
