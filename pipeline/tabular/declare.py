"""A competition's declaration, read off the files Kaggle ships (``pipeline init PATH``).

A folder or a zip holding ``train.csv``, ``test.csv`` and ``sample_submission.csv`` (each may be
zipped on its own, as Kaggle often ships them): the id is the column that test and the sample
share; the label is the sample's other column, found in train; or, when the sample has a column
per class, train's one column that test lacks, whose classes those columns name. The task and
what the submission holds follow from the labels and the sample's values, and the proposed
metric from both. What cannot be told apart ends in one line that says which key to set.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import tomlkit

from pipeline.errors import DataError, UsageError, shown
from pipeline.tabular.tables import read_csv
from pipeline.workspace import write_text

FILES = {"train": "train.csv", "test": "test.csv", "sample": "sample_submission.csv"}
MAX_CLASSES = 30  # integer labels with at most this many values, submitted as such, are classes


@dataclass
class Declaration:
    """A ``[target.NAME]`` table and the comments that say where each guess came from."""

    name: str
    keys: dict
    notes: dict = field(default_factory=dict)  # key -> why


def locate(path: Path) -> tuple[Path | None, dict[str, str]]:
    """The archive (None for a folder) and each role's file: a path in the folder, or a member
    of the archive. ``train.csv.zip`` stands for ``train.csv``."""
    if path.is_dir():
        names = {p.name: str(p) for p in path.rglob("*") if p.is_file()}
        archive = None
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as handle:
            names = {PurePosixPath(m).name: m for m in handle.namelist() if not m.endswith("/")}
        archive = path
    else:
        raise UsageError(f"{path}: not a folder or a zip of a competition's files")
    found = {}
    for role, name in FILES.items():
        match = names.get(name) or names.get(name + ".zip")
        if match is None:
            raise DataError(f"{path}: no {name} (nor {name}.zip); a Kaggle competition ships train.csv, test.csv "
                            "and sample_submission.csv")
        found[role] = match
    return archive, found


def read(archive: Path | None, member: str) -> pd.DataFrame:
    if archive is None:
        return read_csv(member)
    with zipfile.ZipFile(archive) as handle, handle.open(member) as stream:
        return pd.read_csv(stream, low_memory=False, compression="zip" if member.endswith(".zip") else None)


def declare(path: Path, base: Path, name: str | None = None) -> Declaration:
    """The declaration of the competition at ``path``, its paths relative to ``base``."""
    archive, files = locate(path)
    train, test, sample = (read(archive, files[role]) for role in FILES)
    name = name or re.sub(r"[^a-z0-9_-]+", "-", path.name.lower().removesuffix(".zip")).strip("-") or "competition"
    keys = {} if archive is None else {"archive": _relative(archive, base)}
    keys.update({role: files[role] if archive else _relative(Path(files[role]), base) for role in FILES})
    declaration = Declaration(name, keys)
    keys["id"] = _id(test, sample)
    _labels(declaration, train, test, sample)
    return declaration


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def _id(test: pd.DataFrame, sample: pd.DataFrame) -> str:
    shared = [c for c in sample.columns if c in test.columns]
    if not shared:
        raise DataError(f"sample_submission.csv shares no column with test.csv (its columns: "
                        f"{', '.join(map(str, sample.columns))}); set id = \"COLUMN\" by hand")
    return shared[0]


def _labels(declaration: Declaration, train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame) -> None:
    keys = declaration.keys
    columns = [c for c in sample.columns if c != keys["id"]]
    in_train = [c for c in columns if c in train.columns]
    if len(columns) == 1 and in_train:
        keys["label"] = columns[0]
        _single(declaration, train[columns[0]], sample[columns[0]])
    elif len(in_train) > 1:
        _several(declaration, train, sample, columns, in_train)
    else:
        _per_class(declaration, train, test, columns)


def _several(declaration: Declaration, train: pd.DataFrame, sample: pd.DataFrame, columns: list[str],
             in_train: list[str]) -> None:
    """Several label columns (multi-target): each read like a single one; they must agree."""
    if in_train != columns:
        missing = [c for c in columns if c not in in_train]
        raise UsageError(f"sample_submission.csv's columns {', '.join(missing)} are not in train.csv; "
                         "set label = [\"COLUMN\", ...] by hand")
    found = []
    for column in columns:
        each = Declaration(declaration.name, {"label": column})
        _single(each, train[column], sample[column])
        found.append(each)
    kinds = {(d.keys["task"], d.keys["metric"], d.keys.get("positive")) for d in found}
    if len(kinds) > 1:
        raise UsageError(f"the label columns {', '.join(columns)} are not all of one task and metric; "
                         "declare a target per column by hand")
    declaration.keys.update({k: v for k, v in found[0].keys.items() if k != "label"}, label=columns)
    declaration.notes.update(found[0].notes)
    declaration.notes["label"] = "several label columns: a model per column, scored on each and on the mean"


def _single(declaration: Declaration, labels: pd.Series, submitted: pd.Series) -> None:
    keys, notes = declaration.keys, declaration.notes
    numeric = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    classes = labels.dropna().unique()
    few_integers = numeric and len(classes) <= MAX_CLASSES and bool(np.all(np.mod(classes, 1) == 0))
    submitted_numbers = pd.api.types.is_numeric_dtype(submitted) and not pd.api.types.is_bool_dtype(submitted)
    probabilities = submitted_numbers and submitted.between(0, 1).all() and not submitted.isin([0, 1]).all()
    integers_submitted = submitted_numbers and bool(np.all(np.mod(submitted.dropna(), 1) == 0))
    if numeric and not (few_integers and (integers_submitted or (len(classes) == 2 and probabilities))):
        keys.update(task="regression", metric=_regression_metric(labels))
        notes["metric"] = "a guess from the labels: check the competition's Evaluation page"
    elif len(classes) == 2 and probabilities:
        keys.update(task="classification", metric="auc", positive=_positive(classes, keys["label"]))
        notes["metric"] = "the sample holds a probability per row: auc or logloss (check the Evaluation page)"
    else:
        keys.update(task="classification", metric="accuracy")
        notes["metric"] = "the sample holds a class per row: accuracy (check the Evaluation page)"


def _regression_metric(labels: pd.Series) -> str:
    values = labels.dropna().to_numpy(dtype=float)
    skewed = values.min() >= 0 and pd.Series(values).skew() > 1
    return "rmsle" if skewed else "rmse"


def _positive(classes, label: str):
    """The class whose probability a one-column submission holds: 1 or True, else ask."""
    known = [c for c in classes if str(c).lower() in ("1", "1.0", "true", "yes")]
    if len(known) != 1:
        raise UsageError(f"the sample holds one probability of {label!r} ({', '.join(map(str, classes))}): "
                         "set positive = \"CLASS\" to the class it is the probability of")
    return shown(known[0])


def _per_class(declaration: Declaration, train: pd.DataFrame, test: pd.DataFrame, columns: list[str]) -> None:
    candidates = [c for c in train.columns if c not in test.columns]
    names = {str(c) for c in columns}
    matching = [c for c in candidates if {str(v) for v in train[c].dropna().unique()} == names]
    if len(matching) != 1:
        raise UsageError(f"the sample's columns ({', '.join(columns)}) are not in train.csv, nor are they the "
                         f"classes of one train column; set label = \"COLUMN\" by hand")
    declaration.keys.update(label=matching[0], task="classification", metric="logloss")
    declaration.notes["metric"] = "the sample holds a probability per class: logloss (check the Evaluation page)"


def write(declaration: Declaration, config_file: Path) -> str:
    """Add the declaration to ``pipeline.toml`` as a commented ``[target.NAME]`` table, keeping
    everything already there; the table's text."""
    document = tomlkit.parse(config_file.read_text(encoding="utf-8")) if config_file.exists() else tomlkit.document()
    targets = document.setdefault("target", tomlkit.table(is_super_table=True))
    if declaration.name in targets:
        raise UsageError(f"{config_file}: target {declaration.name!r} is declared already; give another --name")
    targets.add(declaration.name, _table(declaration))
    write_text(config_file, tomlkit.dumps(document))
    alone = tomlkit.document()
    alone.add("target", tomlkit.table(is_super_table=True))
    alone["target"].add(declaration.name, _table(declaration))
    return tomlkit.dumps(alone).strip()


def _table(declaration: Declaration):
    table = tomlkit.table()
    table.add(tomlkit.comment(f"written by `pipeline init`: check the guesses, then `pipeline run {declaration.name}`"))
    for key, value in declaration.keys.items():
        table.add(key, value)
        if key in declaration.notes:
            table[key].comment(declaration.notes[key])
    return table
