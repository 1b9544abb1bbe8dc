"""Booleans: two values among true/false, yes/no, y/n, t/f and 1/0. They read as 0.0/1.0 and
become a category of two levels, false and true (one-hot with a missing column; trees split
its codes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.tabular.roles.base import Role, check_reads, register

TRUTHS = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0, "y": 1.0, "n": 0.0, "t": 1.0, "f": 0.0,
          "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0}
LEVELS = {1.0: "true", 0.0: "false"}


@register
class Boolean(Role):
    name = "boolean"
    priority = 30

    def claims(self, column, cells) -> bool:
        if cells.numeric:
            return set(cells.present.astype(np.float64).unique()) <= {0.0, 1.0}
        lowered = set(cells.stripped.str.lower().unique())
        return len(lowered) == 2 and lowered <= set(TRUTHS)

    def check(self, column, cells, where: str) -> None:
        check_reads(column, cells[0], where, "booleans")

    def read(self, values, column):
        if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            return values.astype(np.float64)
        return values.map(lambda v: TRUTHS.get(str(v).strip().lower(), np.nan) if v == v else np.nan).astype(
            np.float64)

    def names(self, column, fitted) -> list[str]:
        return [column.name]

    def levels(self, column, fitted) -> dict:
        return {column.name: sorted(LEVELS.values())}

    def frames(self, column, fitted, values) -> tuple[dict, dict]:
        return {}, {column.name: values.map(LEVELS)}

