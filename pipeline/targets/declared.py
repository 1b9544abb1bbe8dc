"""Targets declared in the workspace's ``pipeline.toml``, tabular::

    [target.churn]
    train = "data/churn_train.csv"     # a path (relative to pipeline.toml) or an http(s) URL
    test = "https://example.org/churn_test.csv"
    test_sha1 = "…"                    # optional: train_sha1 / test_sha1 verify the files
    id = "customer"
    label = "churned"                  # or several columns: label = ["y1", "y2"]
    task = "classification"            # or "regression"
    metric = "accuracy"                # see pipeline.metrics

or of images, a folder of image files (``images = "train/"``, ``train`` a CSV of ids and labels,
``test`` a folder) or CSVs of pixels (``pixels = "pixel"``), with ``classes``, ``size``,
``channels`` and ``resize`` (see :mod:`pipeline.images.layouts`).

Kaggle ships a competition as one zip: ``archive = "URL or path"`` (with an optional
``archive_sha1``) makes ``train`` and ``test`` member paths inside it; ``kaggle = "SLUG"`` has
Kaggle's client download that zip. Each group of keys is read by its own function below; every
mistake is a one-line ConfigError naming the file, the table and the key.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from pipeline import hub
from pipeline.errors import ConfigError, DataError
from pipeline.hub import DataFile
from pipeline.images.layouts import LAYOUTS, ImageSpec
from pipeline.metrics import Metric, metric_for
from pipeline.params import read_toml
from pipeline.tabular.presets import AUTO, BEST, DECLARED_FAMILIES, DECLARED_MODELS
from pipeline.tabular.tables import TableSpec
from pipeline.targets.base import Target
from pipeline.targets.builtin import BUILTIN
from pipeline.targets.declared_images import DeclaredImages
from pipeline.targets.images import IMAGE_DEFAULTS
from pipeline.targets.several import SeveralLabels
from pipeline.targets.tabular import TabularTarget
from pipeline.tasks import Task, task_for
from pipeline.workspace import Workspace

IMAGE_KEYS = {*LAYOUTS, "classes", "size", "channels", "resize"}  # an image target's own keys
TABULAR_KEYS = {"task", "columns", "group", "time", "positive", "higher_is_better", "submits"}  # a tabular one's
TARGET_KEYS = {"train", "test", "train_sha1", "test_sha1", "id", "label", "metric", "archive", "archive_sha1",
               "sample", "sample_sha1", "kaggle", *TABULAR_KEYS, *IMAGE_KEYS}


def declared_targets(workspace: Workspace) -> dict[str, Target]:
    """Targets declared in ``pipeline.toml``, by name: a competition of several label columns
    and each column's target too."""
    path = workspace.config_file
    targets = {}
    for name, table in read_toml(path).get("target", {}).items():
        where = f"{path} [target.{name}]"
        _check_keys(name, table, where)
        if set(LAYOUTS) & set(table):
            targets[name] = _image_target(name, table, path.parent, where)
            continue
        task, metric = _scoring(table, path.parent, where)
        archive, sources = _files(name, table, path.parent, where)
        labels, spec = _spec(table, task, metric, where)
        target = TabularTarget(name, sources["train"], sources["test"], spec,
                               {"model": "linear", "split": "shuffled"}, DECLARED_FAMILIES, {"auto": AUTO, "best": BEST},
                               "auto", DECLARED_MODELS, archive=archive, sample=sources.get("sample"),
                               kaggle=table.get("kaggle"))
        targets.update(SeveralLabels.of(target, labels) if len(labels) > 1 else {name: target})
    return targets


def _check_keys(name: str, table, where: str) -> None:
    """A name of its own, and a table of known keys holding the required ones."""
    if name in BUILTIN:
        raise ConfigError(f"{where}: {name!r} is a built-in target; pick another name")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of keys")
    unknown = sorted(set(table) - TARGET_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TARGET_KEYS))})")
    missing = [k for k in ("train", "test", "id", "label") if k not in table]
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")
    layouts = sorted(set(LAYOUTS) & set(table))
    if len(layouts) > 1:
        raise ConfigError(f"{where}: {' and '.join(layouts)} both say how the images are held; keep one")
    foreign = sorted(set(table) & (TABULAR_KEYS if layouts else IMAGE_KEYS))
    if foreign:
        kind = "a tabular target's (drop it)" if layouts else \
            f"an image target's (declare the images with one of {', '.join(LAYOUTS)})"
        raise ConfigError(f"{where}: {foreign[0]!r} is {kind}")


def _scoring(table: dict, base: Path, where: str) -> tuple[Task, Metric]:
    """``task`` and ``metric`` (with ``higher_is_better`` and ``submits`` for a custom one)."""
    task = task_for(table.get("task", "regression"), where)
    metric = metric_for(_metric_reference(table.get("metric", task.default_metric), base), task.name,
                        where=where, higher_is_better=table.get("higher_is_better"), submits=table.get("submits"))
    return task, metric


def _metric_reference(metric, base: Path):
    """A custom metric in a file (``scoring.py:gini``) names the file from pipeline.toml's folder."""
    if isinstance(metric, str) and ":" in metric and metric.rpartition(":")[0].endswith(".py"):
        module, _, function = metric.rpartition(":")
        return f"{(base / module).expanduser().resolve()}:{function}"
    return metric


def _image_target(name: str, table: dict, base: Path, where: str) -> DeclaredImages:
    """An image competition: its layout, its files (the layout's folders among them), its spec
    and the metric that says what its submission holds (a label per id by default)."""
    key = next(k for k in LAYOUTS if k in table)
    layout = LAYOUTS[key].of(_text(table[key], key, where))
    metric = metric_for(_text(table.get("metric", "accuracy"), "metric", where), "classification", where=where)
    archive, sources = _files(name, table, base, where, layout.roles, layout.folders)
    return DeclaredImages(name, IMAGE_DEFAULTS, layout, _image_spec(table, layout, where), metric, sources, archive,
                          table.get("kaggle"))


def _text(value, key: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _image_spec(table: dict, layout, where: str) -> ImageSpec:
    """``id``, ``label``, and the optional ``classes``, ``size``, ``channels`` and ``resize``."""
    classes, size, channels = table.get("classes"), table.get("size"), table.get("channels")
    if classes is not None and not (isinstance(classes, list) and classes and len(set(map(str, classes))) == len(
            classes) and all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes)):
        raise ConfigError(f"{where}: classes must be a list of distinct class names or numbers, in the model's order")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)):
        raise ConfigError(f"{where}: size must be [HEIGHT, WIDTH] in pixels, e.g. size = [28, 28]")
    if channels not in (None, *layout.channels):
        raise ConfigError(f"{where}: channels must be {' or '.join(map(str, layout.channels))} "
                          f"({'grey or RGB' if len(layout.channels) > 1 else 'pixels in a CSV are grey'})")
    if not isinstance(table.get("resize", True), bool):
        raise ConfigError(f"{where}: resize must be true or false")
    return ImageSpec(_text(table["id"], "id", where), _text(table["label"], "label", where),
                     None if classes is None else tuple(classes), None if size is None else tuple(size), channels,
                     table.get("resize", True))


def _files(name: str, table: dict, base: Path, where: str, roles: tuple[str, ...] = ("train", "test", "sample"),
           folders: tuple[str, ...] = ()) -> tuple[DataFile | Path | None, dict]:
    """Where the files come from: the archive (None without ``archive``), and each of ``roles``
    (``folders`` among them are folders): member paths inside Kaggle's zip or the archive, else
    paths or URLs."""
    roles = [role for role in roles if role in table]
    if "kaggle" in table and "archive" in table:
        raise ConfigError(f"{where}: kaggle and archive both say where the files come from; keep one")
    if "kaggle" in table and (not isinstance(table["kaggle"], str)
                              or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", table["kaggle"])):
        raise ConfigError(f"{where}: kaggle must be a competition's slug, e.g. \"house-prices-advanced-"
                          "regression-techniques\"")
    archive = None
    if "archive" in table:
        archive = _source(name, "archive", table["archive"], table.get("archive_sha1"), base, where)
    if "kaggle" in table or "archive" in table:
        return archive, {role: _member(table[role], role, where) for role in roles}
    return None, {role: _source(name, role, table[role], table.get(f"{role}_sha1"), base, where, role in folders)
                  for role in roles}


def _source(target: str, role: str, value: str, sha1: str | None, base: Path, where: str,
            folder: bool = False) -> DataFile | Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {role} must be a path or URL string")
    if folder:
        path = (base / value).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"{where}: {role} folder {path} does not exist (a folder of images: a path, or a "
                              "folder inside the archive)")
        return path
    if value.startswith(("http://", "https://")):
        name = PurePosixPath(value.split("?")[0]).name
        # an archive keeps its whole name (.tar.gz), which says how to unpack it
        cached = name if role == "archive" else f"{role}{PurePosixPath(name).suffix or '.csv'}"
        return DataFile(f"{target}_{role}", value, sha1, None, f"{target}/{cached}")
    path = (base / value).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"{where}: {role} file {path} does not exist")
    if sha1 and hub.sha1_file(path) != sha1:
        raise DataError(f"{where}: {path} does not match {role}_sha1 {sha1}")
    return path


def _member(value, role: str, where: str) -> str:
    """A member path inside the archive: relative, and never above it."""
    if not isinstance(value, str) or not value or PurePosixPath(value).is_absolute() \
            or ".." in PurePosixPath(value).parts:
        raise ConfigError(f"{where}: {role} must be a relative path inside the archive, got {value!r}")
    return value


def _spec(table: dict, task: Task, metric: Metric, where: str) -> tuple[list[str], TableSpec]:
    """The label columns, and the table's spec (its first label's): ``id``, ``positive``, the
    ``columns``' roles, ``group`` and ``time``."""
    positive = table.get("positive")
    if positive is not None and metric.task.continuous:
        raise ConfigError(f"{where}: positive names a class; it is for task \"classification\"")
    labels = _labels(table["label"], where)
    if len(labels) > 1 and metric.submits.ranked:
        raise ConfigError(f"{where}: metric {metric.name} submits a ranked list of one label's classes, several rows "
                          "per id, which several labels cannot share: declare a target per label column")
    return labels, TableSpec(table["id"], labels[0], task.name, metric.name, positive,
                             _columns(table.get("columns", {}), where), table.get("group"), table.get("time"),
                             table.get("higher_is_better"), table.get("submits"))


def _labels(label, where: str) -> list[str]:
    """``label = "y"``, or several columns: ``label = ["y1", "y2"]``."""
    labels = [label] if isinstance(label, str) else label
    if not isinstance(labels, list) or not labels or not all(isinstance(c, str) and c for c in labels) \
            or len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: label must be a column name or a list of distinct column names")
    return labels


def _columns(declared, where: str) -> dict:
    """``columns = {date = ["arrival"], drop = ["flight"], geo = [["lat", "lon"]]}``: roles and
    their entries, each a column name or, for a role over several columns, a list of them (checked
    against the roles and the table's columns at preprocess)."""
    def entry(value) -> bool:
        return isinstance(value, str) or (isinstance(value, list) and bool(value)
                                          and all(isinstance(c, str) for c in value))

    if not isinstance(declared, dict) or not all(isinstance(v, list) and all(map(entry, v)) for v in declared.values()):
        raise ConfigError(f"{where}: columns must be a table of roles, each a list of column names or of lists of "
                          'them (e.g. columns = {date = ["arrival"], drop = ["flight"], geo = [["lat", "lon"]]})')
    return declared
