"""The roles whose columns are dropped: ``empty`` (no values in train), ``constant`` (one
value), ``duplicate`` (the same values as an earlier column), ``dropped`` (declared
``drop``); and the template of ``id`` (:mod:`.identifier`). They derive nothing."""

from __future__ import annotations

from pipeline.tabular.roles.base import Role, register


class Dropped(Role):
    """A role whose columns become no features."""

    feature = False
    declarable = False


@register
class Empty(Dropped):
    name = "empty"
    priority = 10

    def claims(self, column, cells) -> bool:
        if cells.train.isna().all():
            column.note = "no values in train"
            return True
        return False


@register
class Constant(Dropped):
    name = "constant"
    priority = 20

    def claims(self, column, cells) -> bool:
        if cells.both.nunique(dropna=False) <= 1:
            column.note = f"always {cells.present.iloc[0]!r}" if len(cells.present) else ""
            return True
        return False


@register
class Duplicate(Dropped):
    """Given by :func:`pipeline.tabular.columns.column_roles` to a column whose values an
    earlier one has."""

    name = "duplicate"


@register
class Declared(Dropped):
    """A column the target declares dropped: ``columns = {drop = ["flight"]}``."""

    name = "dropped"
    declarable = True

    @property
    def keyword(self) -> str:
        return "drop"
