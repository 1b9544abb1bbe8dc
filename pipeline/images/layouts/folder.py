"""Kaggle's image folders: the labelled images in a folder, each file named by its id
(``train/17.png``), a CSV of each id's label (``trainLabels.csv``), and a folder of the images
to predict (``test/``), whose ids are the sample submission's, in its order."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import DataError, shown
from pipeline.images import store
from pipeline.images.decode import EXTENSIONS, decode, evenly, survey
from pipeline.images.layouts.base import ImageSpec, Layout, fingerprint, id_column, labels, sample_ids, written
from pipeline.progress import Progress
from pipeline.tabular.tables import read_csv


@dataclass(frozen=True)
class ImageFolder(Layout):
    """``images``: the labelled images' folder; ``train``: the CSV of their ids and labels;
    ``test``: the folder of images to predict; ``sample``: the submission whose ids (in its
    order) are predicted; without one, every image in ``test`` is, in the order of its name."""

    roles = ("train", "images", "test", "sample")
    folders = ("images", "test")
    channels = (1, 3)

    def key(self, files: dict[str, Path]) -> dict:
        return {role: fingerprint(path) for role, path in files.items()}

    def write(self, files: dict[str, Path], spec: ImageSpec, folder: Path, progress: Progress) -> dict:
        table = read_csv(files["train"])
        ids = id_column(table, spec, files["train"])
        indices, classes = labels(table, spec, files["train"], ids, spec.id)
        train = _paths(ids, _index(files["images"])[0], files["train"], files["images"], spec.id)
        found, stems = _index(files["test"])
        test_ids = sample_ids(files["sample"], spec) if "sample" in files else pd.Series(_in_order(stems))
        test = _paths(test_ids, found, files.get("sample", files["test"]), files["test"], spec.id)
        size, channels = spec.size, spec.channels
        if size is None or channels is None:
            chosen = survey(evenly(train))
            size, channels = size or chosen[0], channels or chosen[1]
        shape = (*([channels] if channels > 1 else []), *size)
        started, step = time.perf_counter(), progress.step("decode", len(train) + len(test), "image")
        with store.writing(folder, len(train) + len(test), shape, len(train)) as writer:
            for chunk in decode(train + test, list(size), channels, spec.resize, step):
                writer.write(chunk)
        step.close()
        return written(writer, classes, indices, test_ids.tolist(), time.perf_counter() - started)


def _index(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """A folder's image files by name and by stem (``17.png`` and ``17``), and the stems in the
    order found; two files of one stem are a one-line error."""
    found, stems = {}, []
    for entry in os.scandir(folder):
        stem, dot, extension = entry.name.rpartition(".")
        if not dot or f".{extension.lower()}" not in EXTENSIONS or not entry.is_file():
            continue
        if stem in found:
            raise DataError(f"{folder}: {found[stem].name} and {entry.name} are both image {stem!r}; keep one")
        found[stem] = found[entry.name] = Path(entry.path)
        stems.append(stem)
    return found, stems


def _paths(ids: pd.Series, found: dict[str, Path], where: Path, folder: Path, id_name: str) -> list[Path]:
    """The image file of each id; an id without one is a one-line error naming ``where`` it is listed."""
    paths = [found.get(str(shown(i))) for i in ids]
    if None in paths:
        missing = shown(ids.iloc[paths.index(None)])
        raise DataError(f"{where}: {id_name} {missing!r} has no image in {folder} "
                        f"(looked for {missing}.png, .jpg and the other image extensions)")
    return paths


def _in_order(stems: list[str]) -> list:
    """Ids from file names: numbers in numeric order when every name is one, else names in order."""
    if stems and all(s.isdigit() for s in stems):
        return sorted(int(s) for s in stems)
    return sorted(stems)
