"""K-fold splits, shared by every kind of target: scikit-learn's splitters.

``contiguous`` is d2l's split (fold i is the i-th block of rows); ``shuffled`` is KFold with
shuffling (stratified for classification); ``group`` keeps each group's rows in one fold
(GroupKFold, stratified for classification), for competitions whose test holds new groups;
``time`` trains on the past and validates on the future (TimeSeriesSplit over the rows ordered
by time), for competitions whose test is later in time: fold k validates the (k+1)-th of
``folds`` + 1 blocks of time on every earlier one, so the first block is never validated.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold, TimeSeriesSplit

from pipeline.errors import ParamError

SPLITS = ("contiguous", "shuffled", "group", "time")


def fold_rows(labels: torch.Tensor, folds: int, split: str, seed: int, stratify: bool = False,
              groups: np.ndarray | None = None, times: np.ndarray | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(train rows, valid rows) per fold; ``groups`` (a code per row) for the group split,
    ``times`` (a number per row, NaN unknown: always trained on) for the time split."""
    if split not in SPLITS:
        raise ParamError("split", split, f"not one of {', '.join(SPLITS)}")
    n = len(labels)
    if not 2 <= folds <= n:
        raise ParamError("folds", folds, f"need between 2 and {n} (the number of training rows)")
    y = labels.cpu().numpy() if stratify else np.zeros(n)
    largest = int(np.bincount(y).max()) if stratify else n
    if split in ("contiguous", "shuffled") and folds > largest:
        raise ParamError("folds", folds, f"the largest class has {largest} rows: give at most {largest} folds")
    if split == "time":
        return _by_time(times, folds)
    if split == "group":
        if groups is None:
            raise ParamError("split", split, "needs a group column: declare group = \"COLUMN\" in the target")
        splitter = (StratifiedGroupKFold if stratify else GroupKFold)(n_splits=folds, shuffle=True, random_state=seed)
        pairs = splitter.split(np.zeros(n), y, groups)
    else:
        shuffle = split == "shuffled"
        splitter = (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=shuffle,
                                                            random_state=seed if shuffle else None)
        pairs = splitter.split(np.zeros(n), y)
    return [(torch.from_numpy(tr), torch.from_numpy(va)) for tr, va in pairs]


def _by_time(times: np.ndarray | None, folds: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if times is None:
        raise ParamError("split", "time", "needs a date column: declare time = \"COLUMN\" in the target")
    known = np.flatnonzero(~np.isnan(times))
    unknown = np.flatnonzero(np.isnan(times))
    order = known[np.argsort(times[known], kind="stable")]
    out = []
    for train, valid in TimeSeriesSplit(n_splits=folds).split(order):
        out.append((torch.from_numpy(np.sort(np.concatenate([order[train], unknown]))),
                    torch.from_numpy(np.sort(order[valid]))))
    return out
