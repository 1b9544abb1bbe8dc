"""Numbers: numeric cells, or text that is numbers in nearly every cell (numbers stored as text;
the few cells that are not read as missing, with a warning). A number stays itself, as floats:
scaling, winsorizing and splines come after, for every numeric feature alike."""

from __future__ import annotations

import logging

from pipeline.tabular.roles.base import Role, as_numbers, check_reads, register, unread

log = logging.getLogger(__name__)

NUMERIC_SHARE = 0.95  # a text column whose cells are numbers in at least this share is numbers


@register
class Number(Role):
    name = "number"
    priority = 40

    def claims(self, column, cells) -> bool:
        """Numeric cells, unless they number the rows; text that is numbers in NUMERIC_SHARE of
        the cells. Text that is numbers in less, but most, cells stays text, with a remark that
        says how to read it as numbers."""
        if cells.numeric:
            return not cells.sequential
        if cells.number_share >= NUMERIC_SHARE:
            if cells.numbers.isna().any():
                column.note = f"{unread(cells.strings[cells.numbers.isna()], cells.train_rows)}; read as missing"
                log.warning("%s: %s", column.name, column.note)
            return True
        if cells.mostly_numbers:
            cells.remark = (f"{unread(cells.strings[cells.numbers.isna()], cells.train_rows)}; kept as text "
                            f"(over {1 - NUMERIC_SHARE:.0%} of the cells): declare columns.number to read them "
                            "as numbers")
            log.warning("%s: %s", column.name, cells.remark)
        return False

    def check(self, column, cells, where: str) -> None:
        check_reads(column, cells[0], where, "numbers")

    def read(self, values, column):
        return as_numbers(values)

    def names(self, column, fitted) -> list[str]:
        return [column.name]

    def frames(self, column, fitted, values) -> tuple[dict, dict]:
        return {column.name: values}, {}
