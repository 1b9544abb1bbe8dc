"""Categories: text of few distinct values, whatever no other role claims. A category keeps its
levels seen at least ``min_count`` times, the ``max_levels`` most frequent (0: all), and merges
the others into one rare level; a category of more levels than that is also given its frequency
and, for the in-fold target encoding, codes of every level it was fit on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.tabular.encoders import RARE, Strings
from pipeline.tabular.roles.base import Role, register


@register
class Category(Role):
    name = "category"
    priority = 80  # the last asked: it claims every column

    def claims(self, column, cells) -> bool:
        return True

    def fit(self, column, values, max_levels: int = 0, min_count: int = 1, **options) -> dict:
        """The kept levels, sorted; and, for a high-cardinality category, every level by
        frequency (a :class:`Strings`) with its count in the fit rows."""
        counts = values.value_counts()
        kept = counts[counts >= min_count]
        if max_levels and len(kept) > max_levels:
            kept = kept.iloc[:max_levels]
        high = max_levels and len(counts) > max_levels
        return {"levels": sorted(kept.index),
                "counts": (Strings(list(counts.index)), counts.to_numpy(dtype=np.float64)) if high else None}

    def names(self, column, fitted: dict) -> list[str]:
        return [column.name] + ([f"{column.name}.count"] if fitted["counts"] else [])

    def levels(self, column, fitted: dict) -> dict:
        return {column.name: fitted["levels"]}

    def frames(self, column, fitted: dict, values) -> tuple[dict, dict]:
        """The levels, the rare ones merged; a high-cardinality category's log frequency (0 for a
        level never seen in the fit rows)."""
        categories = {column.name: values.where(values.isna() | values.isin(set(fitted["levels"])), RARE)}
        if not fitted["counts"]:
            return {}, categories
        levels, counts = fitted["counts"]
        seen = values.map(levels.index)
        count = pd.Series(counts[seen.fillna(0).astype(int)], index=values.index).where(seen.notna(), 0.0)
        return {f"{column.name}.count": np.log1p(count)}, categories

    def codes(self, column, fitted: dict, frame: pd.DataFrame) -> list[np.ndarray]:
        """Every level's code: -1 where missing, -2 for a level never seen when fit."""
        if not fitted["counts"]:
            return []
        values = self.values(column, frame)
        codes = values.map(fitted["counts"][0].index).where(values.notna(), -1).fillna(-2)
        return [codes.to_numpy(dtype=np.int64)]

    def remark(self, fitted: dict) -> str:
        return "frequency and an in-fold target encoding" if fitted["counts"] else ""
