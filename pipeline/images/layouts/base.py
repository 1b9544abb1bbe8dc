"""What every layout shares: the declaration (:class:`ImageSpec`), the class a layout
subclasses, labels read as class indices, the id columns, and a manifest's contents."""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import DataError, shown
from pipeline.hub import sha1_file
from pipeline.images import store
from pipeline.progress import Progress
from pipeline.tabular.tables import read_csv


@dataclass(frozen=True)
class ImageSpec:
    """What ``[target.NAME]`` declares of an image competition besides where its files are."""

    id: str  # the sample's id column (a folder's files are named by it)
    label: str  # the labels' column
    classes: tuple | None = None  # each output's class, in order; None: the labels' values, sorted
    size: tuple | None = None  # [height, width] of the images in the tensor file; None: chosen from the data
    channels: int | None = None  # 1 (grey) or 3 (RGB); None: chosen from the data
    resize: bool = True  # false: an image of another size than ``size`` is refused, not resized

    def values(self) -> dict:
        """As the lock and the manifest record it: an edit of pipeline.toml makes the images again."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Layout(ABC):
    """A way of holding a competition's images in files, given by pipeline.toml's keys."""

    roles: tuple[str, ...]  # the keys of pipeline.toml that name its files and folders
    folders: tuple[str, ...] = ()  # those of them that name folders
    channels: tuple[int, ...] = (1,)  # the channels it may hold: 1 (grey), 3 (RGB)

    @classmethod
    def of(cls, value) -> Layout:
        """The layout that its key's value in pipeline.toml declares (``images = "train/"``: a
        folder, which is one of its files)."""
        return cls()

    @abstractmethod
    def key(self, files: dict[str, Path]) -> dict:
        """What the images are made from (its files' fingerprints): a change makes them again."""

    @abstractmethod
    def write(self, files: dict[str, Path], spec: ImageSpec, folder: Path, progress: Progress) -> dict:
        """Write the tensor file into ``folder``: the manifest's contents (classes, labels, test ids)."""


def fingerprint(path: Path) -> str:
    """What a key holds of a file (its SHA-1) or a folder (the SHA-1 of its files' names and
    sizes): the same after an archive is unpacked again, which sets new modification times."""
    if path.is_file():
        return sha1_file(path)
    digest = hashlib.sha1()
    for name, size in sorted((entry.name, entry.stat().st_size) for entry in os.scandir(path) if entry.is_file()):
        digest.update(f"{name}\0{size}\n".encode())
    return digest.hexdigest()


def labels(frame: pd.DataFrame, spec: ImageSpec, path: Path, ids: pd.Series, named: str) -> tuple[np.ndarray, list]:
    """Each row's class index, and the classes (declared, else the labels' values sorted). A
    missing label or one of no declared class is a one-line error naming the file and the row
    (``named`` says what ``ids`` are: the id column, or line numbers)."""
    values = _column(frame, spec.label, "label", path)
    missing = values.isna().to_numpy()
    if missing.any():
        raise DataError(f"{path}: {named} {shown(ids[missing].iloc[0])!r} has no {spec.label}")
    classes = list(spec.classes) if spec.classes is not None else [shown(v) for v in sorted(values.unique())]
    index = {str(c): i for i, c in enumerate(classes)}
    found = values.astype(str).map(index)
    unknown = found.isna().to_numpy()
    if unknown.any():
        raise DataError(f"{path}: {spec.label} {shown(values[unknown].iloc[0])!r} of {named} "
                        f"{shown(ids[unknown].iloc[0])!r} is not one of the declared classes "
                        f"({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''}); "
                        "add it to classes or fix the row")
    return found.to_numpy(dtype=np.int64), classes


def id_column(frame: pd.DataFrame, spec: ImageSpec, path: Path) -> pd.Series:
    """The ``id`` column of ``frame`` (read from ``path``): present, and no id twice."""
    ids = _column(frame, spec.id, "id", path)
    repeated = ids.duplicated().to_numpy()
    if repeated.any():
        raise DataError(f"{path}: {spec.id} {shown(ids[repeated].iloc[0])!r} appears twice")
    return ids


def sample_ids(sample: Path, spec: ImageSpec) -> pd.Series:
    """The sample submission's ids, in its order."""
    return id_column(read_csv(sample), spec, sample)


def written(writer: store.Writer, classes: list, indices: np.ndarray, test_ids: list, seconds: float) -> dict:
    """A manifest's contents once ``writer`` has written the labelled images and then the test ones."""
    mean, std = writer.statistics()
    return {"sha1": writer.sha1.hexdigest(), "shape": [writer.count, *writer.shape], "train": writer.labelled,
            "test": len(test_ids), "classes": classes, "labels": indices.tolist(),
            "test_ids": [shown(i) for i in test_ids], "mean": mean, "std": std,
            "images_per_second": round(writer.count / max(seconds, 1e-9))}


def _column(frame: pd.DataFrame, column: str, key: str, path: Path) -> pd.Series:
    """The column that pipeline.toml's ``key`` names, or a one-line error naming the file."""
    if column not in frame.columns:
        raise DataError(f"{path}: no column {column!r} (its columns: {', '.join(map(str, frame.columns))}); "
                        f"fix {key} in pipeline.toml")
    return frame[column]
