"""Ids: a different value in nearly every row (single words), or sequential integers. They say
which row it is, not what it holds, and are dropped."""

from __future__ import annotations

from pipeline.tabular.roles.base import register
from pipeline.tabular.roles.dropped import Dropped

ID_SHARE = 0.99  # distinct values per non-missing cell from which single words are an id ...
ID_WORDS = 2.0  # ... when fewer words a distinct value than this


@register
class Identifier(Dropped):
    name = "id"
    priority = 60  # after numbers and dates, which may be distinct in every row too

    def claims(self, column, cells) -> bool:
        if cells.numeric:
            if not cells.sequential:
                return False
            column.note = "a different integer in every row, nearly sequential"
            return True
        if cells.distinct_share >= ID_SHARE and cells.words < ID_WORDS:
            column.note = "a different value in nearly every row"
            return True
        return False
