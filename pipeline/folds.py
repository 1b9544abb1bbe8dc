"""K-fold splits, shared by every kind of target: scikit-learn's KFold and StratifiedKFold."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold

from pipeline.errors import ParamError

SPLITS = ("contiguous", "shuffled")


def fold_rows(labels: torch.Tensor, folds: int, split: str, seed: int,
              stratify: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(train rows, valid rows) per fold. ``contiguous`` is d2l's split: fold i is the i-th block."""
    if split not in SPLITS:
        raise ParamError("split", split, f"not one of {', '.join(SPLITS)}")
    n = len(labels)
    if not 2 <= folds <= n:
        raise ParamError("folds", folds, f"need between 2 and {n} (the number of training rows)")
    shuffle = split == "shuffled"
    splitter_cls = StratifiedKFold if stratify else KFold
    splitter = splitter_cls(n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None)
    y = labels.cpu().numpy() if stratify else np.zeros(n)
    return [(torch.from_numpy(tr), torch.from_numpy(va)) for tr, va in splitter.split(np.zeros(n), y)]
