"""An image competition's declaration, read off the files Kaggle ships (``pipeline init PATH``),
in either of its two shapes:

- a folder of labelled images (``train/``, each file named by its id), a CSV of each id's label
  (``trainLabels.csv``), a folder of test images (``test/``) and the sample submission, whose
  ids name the test images: a label per id, or a probability per class;
- CSVs of pixels (Digit Recognizer's ``train.csv``: a label and ``pixel0`` ... ``pixel783``;
  ``test.csv``: the pixels, with or without the sample's id column).

The size and colour the images are stored at are those most of 200 train images have (at most
64 pixels a side); what cannot be told apart ends in one line that says which key to set, as
the tabular init does (:mod:`pipeline.tabular.declare`, whose declaration and writer this uses).
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

import pandas as pd

from pipeline.errors import DataError, UsageError, shown
from pipeline.images.decode import EXTENSIONS, evenly, survey
from pipeline.tabular.declare import Declaration, locate
from pipeline.tabular.tables import read_csv

SMALLEST_PIXELS = 64  # fewer numbered columns than an 8x8 image are a table's, not pixels


class Files:
    """The files of a folder or a zip, by their paths inside it."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_dir():
            self.archive, self.names = None, sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                                                    if p.is_file())
        elif path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as handle:
                self.archive, self.names = path, sorted(m for m in handle.namelist() if not m.endswith("/"))
        else:
            raise UsageError(f"{path}: not a folder or a zip of a competition's files")

    def image(self, name: str) -> Path | IO[bytes]:
        """An image file, as Pillow opens it."""
        if self.archive is None:
            return self.path / name
        with zipfile.ZipFile(self.archive) as handle:
            image = io.BytesIO(handle.read(name))
        image.name = f"{self.archive}:{name}"  # what an error names
        return image

    def csv(self, name: str, **options) -> pd.DataFrame:
        if self.archive is None:
            return read_csv(self.path / name) if not options else pd.read_csv(self.path / name, **options)
        with zipfile.ZipFile(self.archive) as handle, handle.open(name) as stream:
            return pd.read_csv(stream, compression="zip" if name.endswith(".zip") else None, **options)

    def key(self, name: str, base: Path) -> str:
        """How pipeline.toml names the file or folder: a member path inside the zip, else a path
        relative to pipeline.toml's folder (absolute when it is outside)."""
        return name if self.archive is not None else _relative(self.path / name, base)


def declare(path: Path, base: Path, name: str | None = None) -> Declaration | None:
    """The declaration of the image competition at ``path`` (its paths relative to ``base``);
    None when its files are not one of the two shapes (a tabular competition's, then)."""
    name = name or re.sub(r"[^a-z0-9_-]+", "-", path.name.lower().removesuffix(".zip")).strip("-") or "competition"
    files = Files(path)
    declaration = Declaration(name, {} if files.archive is None else {"archive": _relative(files.archive, base)})
    folders = _image_folders(files)
    if folders:
        _folders(declaration, files, folders, base)
        return declaration
    return declaration if _pixels(declaration, files, path, base) else None


def _relative(path: Path, base: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(base.resolve())) if resolved.is_relative_to(base.resolve()) else str(resolved)


def _image_folders(files: Files) -> dict[str, list[str]]:
    """Each folder holding image files: its images, in order."""
    folders: dict[str, list[str]] = {}
    for name in files.names:
        member = PurePosixPath(name)
        if member.suffix.lower() in EXTENSIONS:
            folders.setdefault(member.parent.as_posix(), []).append(name)
    return folders


def _one(candidates: list[str], what: str, fix: str) -> str:
    if len(candidates) != 1:
        found = ", ".join(candidates) or "none"
        raise UsageError(f"{what}: found {found}; {fix}")
    return candidates[0]


def _folders(declaration: Declaration, files: Files, folders: dict[str, list[str]], base: Path) -> None:
    """A folder of labelled images, its labels' CSV, a folder of test images and the sample."""
    fix = "write [target.NAME] by hand (images, train, test, sample: see the README)"
    named = {role: [f for f in folders if PurePosixPath(f).name.lower().startswith(role)] for role in ("train", "test")}
    train_dir = _one(named["train"], "the labelled images' folder (its name starting with train)", fix)
    test_dir = _one(named["test"], "the test images' folder (its name starting with test)", fix)
    tables = [n for n in files.names if n.lower().endswith(".csv")]
    sample = _one([n for n in tables if "sample" in PurePosixPath(n).name.lower()], "the sample submission CSV", fix)
    others = [n for n in tables if n != sample]
    labelled = [n for n in others if "label" in PurePosixPath(n).name.lower()]
    labels_csv = _one(labelled if len(others) > 1 and labelled else others, "the labels' CSV (id, label)", fix)
    table, submission = files.csv(labels_csv), files.csv(sample)
    keys = declaration.keys
    keys.update(train=files.key(labels_csv, base), images=files.key(train_dir, base), test=files.key(test_dir, base),
                sample=files.key(sample, base), id=str(submission.columns[0]))
    declaration.notes["images"] = "the labelled images, each file named by its id"
    if keys["id"] not in table.columns:
        raise UsageError(f"{labels_csv} has no column {keys['id']!r}, the sample's id: {fix}")
    stems = {PurePosixPath(n).stem for n in folders[train_dir]} | {PurePosixPath(n).name for n in folders[train_dir]}
    first = table[keys["id"]].astype(str).iloc[0]
    if first not in stems:
        raise DataError(f"{labels_csv}: {keys['id']} {first!r} names no image in {train_dir}/; "
                        "its ids must be the images' names")
    _label(declaration, table, submission, labels_csv, sample)
    surveyed = evenly(folders[train_dir])
    size, channels = survey(files.image(n) for n in surveyed)
    keys.update(size=size, channels=channels)
    declaration.notes["size"] = f"[height, width], the most common of {len(surveyed)} train images (within " \
                                "16..64 pixels a side): every image is resized to it"
    declaration.notes["channels"] = "1: grey, 3: colour (RGB)"


def _label(declaration: Declaration, table: pd.DataFrame, sample: pd.DataFrame, table_name: str,
           sample_name: str) -> None:
    """The label column and its classes, and the metric the sample's columns call for: one
    column, a class (or for two classes a probability) per id; else a probability per class."""
    keys, notes = declaration.keys, declaration.notes
    columns = [str(c) for c in sample.columns[1:]]
    candidates = [c for c in table.columns if c != keys["id"]]
    if len(columns) == 1 and (columns[0] in table.columns or len(candidates) == 1):
        label = columns[0] if columns[0] in table.columns else candidates[0]  # Digit Recognizer: label, Label
    else:
        label = _one([c for c in candidates if {str(v) for v in table[c].dropna().unique()} == set(columns)],
                     f"the column of {table_name} whose classes are {sample_name}'s columns",
                     "set label = \"COLUMN\" by hand")
    classes = [shown(v) for v in sorted(table[label].dropna().unique())]
    keys.update(label=label, classes=classes)
    notes["classes"] = "the labels' values, sorted: the model's outputs, in order"
    values = sample[columns[0]]
    probability = len(columns) == 1 and pd.api.types.is_float_dtype(values) and values.between(0, 1).all() \
        and not values.isin([0, 1]).all()
    if len(columns) > 1:
        keys["metric"], notes["metric"] = "logloss", "the sample holds a probability per class: logloss " \
                                                     "(check the Evaluation page)"
    elif probability and len(classes) == 2:
        keys["metric"], notes["metric"] = "auc", f"the sample holds a probability of {classes[-1]!r} per id: auc " \
                                                 "(check the Evaluation page)"
    else:
        keys["metric"], notes["metric"] = "accuracy", "the sample holds a class per id: accuracy (check the " \
                                                      "Evaluation page)"


def _pixels(declaration: Declaration, files: Files, path: Path, base: Path) -> bool:
    """CSVs of pixels: train.csv, test.csv and sample_submission.csv whose test columns are, but
    for an id, at least 64 numbered columns of whole numbers from 0 to 255, a square count."""
    try:
        _, found = locate(path)
        test = files.csv(found["test"], nrows=20)
    except (DataError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return False  # the tabular init names what is wrong
    prefix, pixels = _numbered(test)
    if len(pixels) < SMALLEST_PIXELS or math.isqrt(len(pixels)) ** 2 != len(pixels) or not _bytes(test[pixels]):
        return False
    train, sample = files.csv(found["train"], nrows=0), files.csv(found["sample"])
    keys = declaration.keys
    keys.update({role: files.key(found[role], base) for role in ("train", "test", "sample")}, pixels=prefix)
    side = math.isqrt(len(pixels))
    declaration.notes["pixels"] = f"{len(pixels)} pixel columns {pixels[0]}..{pixels[-1]}: {side}x{side} grey images"
    absent = [c for c in pixels if c not in train.columns]
    labels = [c for c in train.columns if c not in test.columns]
    if absent or len(labels) != 1:
        raise UsageError(f"{found['train']} is not test.csv's pixels and one label column; write [target.NAME] by "
                         "hand (train, test, pixels, id, label: see the README)")
    keys["id"] = str(sample.columns[0])
    if keys["id"] not in test.columns:
        _row_ids(declaration, files, found, sample, pixels[0])
    _label(declaration, files.csv(found["train"], usecols=labels), sample, found["train"], found["sample"])
    return True


def _numbered(frame: pd.DataFrame) -> tuple[str, list[str]]:
    """The largest group of columns named one prefix and a number, in their numbers' order."""
    groups: dict[str, dict[int, str]] = {}
    for column in map(str, frame.columns):
        match = re.fullmatch(r"(.*?)(\d+)", column)
        if match:
            groups.setdefault(match.group(1), {})[int(match.group(2))] = column
    if not groups:
        return "", []
    prefix = max(groups, key=lambda p: len(groups[p]))
    return prefix, [groups[prefix][k] for k in sorted(groups[prefix])]


def _bytes(frame: pd.DataFrame) -> bool:
    values = frame.to_numpy()
    return values.dtype.kind in "iu" and bool(((values >= 0) & (values <= 255)).all())


def _row_ids(declaration: Declaration, files: Files, found: dict, sample: pd.DataFrame, first_pixel: str) -> None:
    """test.csv without the id column: its rows are ids 1, 2, ..., which the sample's must be."""
    rows = len(files.csv(found["test"], usecols=[first_pixel]))
    ids = pd.to_numeric(sample.iloc[:, 0], errors="coerce")
    if sorted(ids.tolist()) != list(range(1, rows + 1)):
        raise UsageError(f"{found['test']} has no column {declaration.keys['id']!r} and {found['sample']}'s ids are "
                         f"not its rows' numbers 1..{rows}: add the id column to it")
    declaration.notes["id"] = f"{found['test']} has no {declaration.keys['id']} column: its rows are ids 1, 2, ..."

