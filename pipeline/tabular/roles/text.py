"""Free text: strings of several words that rarely repeat. A text becomes its length (log of
characters) and word count, and its TF-IDF terms: a sparse matrix for the in-fold text model,
never one column per distinct string. With ``text_words`` (the best preset's) its most frequent
terms (words and pairs of words) also become 0/1 columns, as many as keep rows x words under WORD_CELLS: on a million rows
20 of them, 4 bytes a cell in each of the two matrices that take them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.tabular.encoders import TextTerms
from pipeline.tabular.roles.base import Role, register

TEXT_WORDS = 2.0  # mean words per distinct value from which rarely repeated strings are text ...
TEXT_DISTINCT = 0.3  # ... when distinct in at least this share of the cells (or of 4+ words anyway)
LONG_TEXT_WORDS = 4.0
WORD_CELLS = 20_000_000  # rows x words of one text column at most: 80 MB in each float32 matrix


@register
class Text(Role):
    name = "text"
    priority = 70

    def claims(self, column, cells) -> bool:
        if cells.numeric:
            return False
        words = cells.words
        if words >= LONG_TEXT_WORDS or (cells.distinct_share >= TEXT_DISTINCT and words >= TEXT_WORDS):
            column.note = f"{words:.1f} words a value"
            return True
        return False

    def fit(self, column, values, text_words: int = 0, **options) -> TextTerms:
        return TextTerms(values.fillna(""), min(text_words, WORD_CELLS // max(1, len(values))))

    def names(self, column, fitted: TextTerms) -> list[str]:
        return [f"{column.name}.chars", f"{column.name}.words", *(f"{column.name}:{w}" for w in fitted.words)]

    def frames(self, column, fitted: TextTerms, values) -> tuple[dict, dict]:
        texts = values.fillna("")
        marked = fitted.indicators(texts)
        return {f"{column.name}.chars": np.log1p(texts.str.len()).astype(np.float64),
                f"{column.name}.words": texts.str.split().str.len().astype(np.float64),
                **{f"{column.name}:{w}": marked[:, i] for i, w in enumerate(fitted.words)}}, {}

    def texts(self, column, fitted: TextTerms, frame: pd.DataFrame) -> list:
        """The TF-IDF matrix (scipy CSR, float32)."""
        return [fitted.transform(self.values(column, frame).fillna(""))]

    def remark(self, fitted: TextTerms) -> str:
        words = f", its {len(fitted.words)} most frequent words as 0/1 columns" if fitted.words else ""
        return f"TF-IDF of {fitted.size} terms -> an in-fold text model{words}"
