"""Competition targets: the built-in ``house`` and ``fashion``, and tabular targets declared in
the workspace's ``pipeline.toml``::

    [target.churn]
    train = "data/churn_train.csv"     # a path (relative to pipeline.toml) or an http(s) URL
    test = "https://example.org/churn_test.csv"
    test_sha1 = "…"                    # optional: train_sha1 / test_sha1 verify the files
    id = "customer"
    label = "churned"
    task = "classification"            # or "regression"
    metric = "accuracy"                # see pipeline.metrics

Kaggle ships a competition as one zip: ``archive = "URL or path"`` (with an optional
``archive_sha1``) makes ``train`` and ``test`` member paths inside it.

A target knows where its data come from, its stage graph and the commands it takes, its
params' defaults and choices; a tabular target's params resolve into a typed recipe
(:mod:`pipeline.tabular.recipe`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from pipeline import hub
from pipeline.errors import ConfigError, DataError, ParamError, UsageError
from pipeline.folds import SPLITS
from pipeline.hub import DATA_HUB, GROUPS, DataFile
from pipeline.images import stages as image_stages
from pipeline.images.train import DEFAULTS as CLASSIFIERS, OPTIMIZERS as IMAGE_OPTIMIZERS, \
    SCHEDULES as IMAGE_SCHEDULES
from pipeline.metrics import metric_for
from pipeline.params import read_toml
from pipeline.tabular import stages as tabular_stages
from pipeline.tabular.ensemble import BLENDS
from pipeline.tabular.features import FIT_ON, SCALINGS
from pipeline.tabular.members import FAMILIES
from pipeline.tabular.optim import OPTIMIZERS
from pipeline.tabular.presets import AUTO, DECLARED_FAMILIES, DECLARED_MODELS, FAMILY_DEFAULTS, MLP
from pipeline.tabular.recipe import Recipe, known_params, resolve
from pipeline.tabular.stacked import ACTIVATIONS
from pipeline.tabular.tables import TableSpec
from pipeline.tabular.trainer import SCHEDULES
from pipeline.tasks import task_for
from pipeline.workspace import Workspace

# d2l 4.10's recipe, reachable with flags (see the README): linear, raw prices, lr 5, 5 contiguous folds.
D2L_LINEAR = {"lr": 5.0, "weight_decay": 0.0, "batch_size": 64, "epochs": 100, "log_target": False}
# and d2l's features: every numeric column a number, every other one-hot on all its levels
D2L_FEATURES = {"roles": False, "max_levels": 0, "min_count": 1}
# The best recipe measured on house (README, "Recipes"): log prices, log1p of skewed columns,
# winsorized numeric columns, and the geometric mean of a Lasso, an RBF support-vector machine and
# boosted trees on random 30% feature subsets (averaged over 3 seeds), fit per fold.
BEST_HOUSE = {
    "log_skewed": 0.75, "clip_quantile": 0.005, "split": "contiguous", "seeds": 3,
    "ensemble": [
        {"model": "lasso", "alpha": 0.0005, "max_iter": 50000, "log_target": True},
        {"model": "svr", "C": 20.0, "epsilon": 0.03, "gamma": 0.001, "log_target": True},
        {"model": "gbm", "learning_rate": 0.03, "max_iter": 1500, "max_leaf_nodes": 7, "min_samples_leaf": 2,
         "l2_regularization": 1.0, "max_features": 0.3, "random_state": 0, "log_target": True},
    ],
}
# `--model mlp` on house: the best recipe's features, and the one-cycle schedule's fixed budget
# of 30 epochs on all of each fold's rows, the budget CV found (mean valid at seeds 0 and 1 for
# 15/20/30/45/60 epochs: 0.1234/0.1225/0.1211/0.1224/0.1239 and 0.1238/0.1224/0.1217/0.1219/0.1243;
# the best epoch picked on a 15% inner split instead: 0.1253 and 0.1239). Noisy classes need the
# inner split (benefits' AUC with a fixed budget: 0.611 against 0.674), so the MLP keeps it elsewhere.
HOUSE_MLP = {"log_skewed": 0.75, "clip_quantile": 0.005,
             "ensemble": [{**MLP, "log_target": True, "inner_valid": 0.0}]}


@dataclass(frozen=True)
class TabularTarget:
    """A CSV competition. ``train`` and ``test`` are hub entries to download, local files used
    in place, or (with an ``archive``) member paths inside it.

    Its params resolve into a :class:`~pipeline.tabular.recipe.Recipe`: ``defaults`` are its
    features', folds' and model's, ``family_defaults`` each model family's settings here,
    ``presets`` named recipes (``default_preset`` when no model or recipe is asked for) and
    ``model_presets`` what a model alone means here (its features too)."""

    name: str
    train: DataFile | Path | str
    test: DataFile | Path | str
    spec: TableSpec
    defaults: dict = field(default_factory=dict)
    family_defaults: dict = field(default_factory=lambda: dict(FAMILY_DEFAULTS))
    presets: dict = field(default_factory=dict)
    default_preset: str | None = None
    model_presets: dict = field(default_factory=dict)
    archive: DataFile | Path | None = None
    sample: DataFile | Path | str | None = None  # the sample submission, whose format submissions take
    kaggle: str | None = None  # the competition's slug on Kaggle: its files come from the official client
    part_of: str | None = None  # a label column's target: the competition of several labels it is part of

    @property
    def params_tables(self) -> tuple[str, ...]:
        """The tables of params.toml that hold this target's params, the later winning: a label
        column's target takes its competition's [NAME], then its own [NAME.COLUMN]."""
        return (self.name,) if self.part_of is None else (self.part_of, self.name)

    stages = tabular_stages.STAGES
    commands = frozenset({"download", "preprocess", "columns", "cv", "train", "submit", "predict", "sweep", "run",
                          "status", "blend"})

    def refuse(self, command: str) -> None:
        """A one-line error for a command this target does not take."""
        if command not in self.commands:
            raise UsageError(f"target {self.name} has no test labels to {command} on; use cv")

    def section(self, params: dict) -> str:
        return self.name

    @property
    def known(self) -> frozenset:
        """The params ``params.toml`` may set for this target."""
        return frozenset(known_params())

    @property
    def flags(self) -> frozenset:
        """The params a command may be given (the CLI offers the common ones as flags)."""
        return frozenset(known_params() - ({"recipe"} if not self.presets else set()))

    @property
    def choices(self) -> dict[str, tuple]:
        return {"model": tuple(FAMILIES), "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
                "activation": tuple(ACTIVATIONS), "split": SPLITS, "fit_on": FIT_ON, "scaling": SCALINGS,
                "blend": BLENDS, "recipe": tuple(self.presets)}

    def flag_values(self, given: dict) -> dict:
        return given

    def configure(self, stored: dict, flags: dict, single: bool = False) -> tuple[dict, Recipe]:
        """The resolved recipe, and its params as plain values (what reports and the lock record)."""
        recipe = resolve(self, stored, flags, single=single)
        return recipe.used_params(self.spec.scorer.task), recipe

    def _archive_dir(self, data_dir: Path) -> Path:
        return data_dir / (self.part_of or self.name) / "archive"  # a label column's: its competition's

    def table_paths(self, data_dir: Path) -> tuple[Path, Path]:
        """Where the train and test CSVs are once :meth:`fetch` has run."""
        return tuple(self._where(source, data_dir) for source in (self.train, self.test))

    def sample_path(self, data_dir: Path) -> Path | None:
        """Where the sample submission is once :meth:`fetch` has run (None: the target has none)."""
        return None if self.sample is None else self._where(self.sample, data_dir)

    def _where(self, source, data_dir: Path) -> Path:
        if self.archive is not None or self.kaggle is not None:
            return self._archive_dir(data_dir) / source
        return source if isinstance(source, Path) else data_dir / source.path

    def fetch(self, data_dir: Path, mirrors: list[str]) -> list[Path]:
        """Download (and verify) what is remote, unpack an archive; the CSVs' paths."""
        if self.kaggle is not None:
            hub.extract_archive(self._kaggle_zip(data_dir), self._archive_dir(data_dir))
        elif isinstance(self.archive, DataFile):
            hub.download_extract(self.archive, data_dir, mirrors, folder=self._archive_dir(data_dir))
        elif self.archive is not None:
            hub.extract_archive(self.archive, self._archive_dir(data_dir))
        else:
            for source in (self.train, self.test, self.sample):
                if isinstance(source, DataFile):
                    hub.download(source, data_dir, mirrors)
        sources = [s for s in (self.train, self.test, self.sample) if s is not None]
        paths = [self._where(source, data_dir) for source in sources]
        for path, member in zip(paths, sources):
            if (self.archive is not None or self.kaggle is not None) and not path.is_file():
                raise DataError(f"archive {self.archive_name} has no member {member!r}; "
                                f"fix train/test/sample in [target.{self.name}]")
        return paths if self.kaggle is None else [self._kaggle_zip(data_dir), *paths]

    def kaggle_zip(self, data_dir: Path) -> Path | None:
        """Where the competition's zip from Kaggle's client lies (None: the files come from
        elsewhere); while it is absent, the download stage needs the client and credentials."""
        return None if self.kaggle is None else self._archive_dir(data_dir).parent / f"{self.kaggle}.zip"

    def _kaggle_zip(self, data_dir: Path) -> Path:
        """The competition's zip from Kaggle's client, fetched once: the lock records its SHA-1,
        so a changed zip makes every later stage stale."""
        path = self.kaggle_zip(data_dir)  # one download for every label column
        if not path.is_file():
            from pipeline import kaggle_client

            kaggle_client.Competition(self.kaggle).download(path.parent)
        return path

    @property
    def archive_name(self) -> str:
        if self.kaggle is not None:
            return f"Kaggle's {self.kaggle}.zip"
        return self.archive.url if isinstance(self.archive, DataFile) else str(self.archive)


IMAGE_FLAGS = frozenset({"model", "valid_fraction", "folds", "seed", "hidden", "dropout", "epochs", "lr",
                         "weight_decay", "batch_size", "optimizer", "schedule", "augment", "tta"})


@dataclass(frozen=True)
class ImageTarget:
    """An image-classification competition; each model keeps its own checkpoint and lock section."""

    name: str
    files: tuple[DataFile, ...]
    defaults: dict
    presets = {}
    known = None  # params.toml may hold any classifier param; fit_classifier checks them
    flags = IMAGE_FLAGS
    stages = image_stages.STAGES
    commands = frozenset({"download", "preprocess", "train", "evaluate", "submit", "run", "status"})

    def refuse(self, command: str) -> None:
        if command in ("cv", "sweep"):
            raise UsageError(f"{self.name} is an image target: train it with folds >= 2 for its fold scores")
        if command not in self.commands:
            raise UsageError(f"target {self.name} has no {command} command")

    def section(self, params: dict) -> str:
        return f"{self.name}/{params['model']}"

    def kaggle_zip(self, data_dir: Path) -> None:
        """Image targets come from the data hub, never from Kaggle's client."""
        return None

    @property
    def choices(self) -> dict[str, tuple]:
        return {"model": tuple(CLASSIFIERS), "optimizer": IMAGE_OPTIMIZERS, "schedule": IMAGE_SCHEDULES}

    def configure(self, stored: dict, flags: dict) -> tuple[dict, None]:
        return {**self.defaults, **stored, **flags}, None

    def flag_values(self, given: dict) -> dict:
        """The classifiers' MLP has one hidden layer: ``--hidden 256`` is a width, not a list."""
        hidden = given.get("hidden")
        if isinstance(hidden, list) and len(hidden) == 1:
            given = {**given, "hidden": hidden[0]}
        return given

    def fetch(self, data_dir: Path, mirrors: list[str]) -> list[Path]:
        return [hub.download(f, data_dir, mirrors) for f in self.files]


HOUSE = TabularTarget("house", DATA_HUB["kaggle_house_train"], DATA_HUB["kaggle_house_test"],
                      TableSpec(id="Id", label="SalePrice", task="regression", metric="log_rmse"),
                      {"model": "linear", "split": "contiguous", **D2L_FEATURES}, {**FAMILY_DEFAULTS, "linear": D2L_LINEAR},
                      {"d2l": {}, "best": BEST_HOUSE, "auto": AUTO}, "best", {"mlp": HOUSE_MLP})
FASHION = ImageTarget("fashion", tuple(DATA_HUB[n] for n in GROUPS["fashion"]),
                      {"model": "mlp", "valid_fraction": 0.1, "folds": 0, "seed": 0, "tta": False})
BUILTIN = {"house": HOUSE, "fashion": FASHION}
TARGET_KEYS = {"train", "test", "train_sha1", "test_sha1", "id", "label", "task", "metric", "columns", "group", "time",
               "archive", "archive_sha1", "positive", "sample", "sample_sha1", "kaggle", "higher_is_better",
               "submits"}


def declared_targets(workspace: Workspace) -> dict[str, TabularTarget]:
    """Targets declared in ``pipeline.toml``; every mistake is a one-line ConfigError."""
    path = workspace.config_file
    config = read_toml(path)
    targets = {}
    for name, table in config.get("target", {}).items():
        where = f"{path} [target.{name}]"
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
        task = task_for(table.get("task", "regression"), where)
        metric = metric_for(_metric_reference(table.get("metric", task.default_metric), path.parent), task.name,
                            where=where, higher_is_better=table.get("higher_is_better"), submits=table.get("submits"))
        archive = None
        if "kaggle" in table and "archive" in table:
            raise ConfigError(f"{where}: kaggle and archive both say where the files come from; keep one")
        if "kaggle" in table:
            if not isinstance(table["kaggle"], str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", table["kaggle"]):
                raise ConfigError(f"{where}: kaggle must be a competition's slug, e.g. \"house-prices-advanced-"
                                  "regression-techniques\"")
            sources = {role: _member(table[role], role, where) for role in ("train", "test", "sample") if role in table}
        elif "archive" in table:
            archive = _source(name, "archive", table["archive"], table.get("archive_sha1"), path.parent, where)
            sources = {role: _member(table[role], role, where) for role in ("train", "test", "sample") if role in table}
        else:
            sources = {role: _source(name, role, table[role], table.get(f"{role}_sha1"), path.parent, where)
                       for role in ("train", "test", "sample") if role in table}
        positive = table.get("positive")
        if positive is not None and metric.task.continuous:
            raise ConfigError(f"{where}: positive names a class; it is for task \"classification\"")
        labels = _labels(table["label"], where)
        spec = TableSpec(table["id"], labels[0], task.name, metric.name, positive,
                         _columns(table.get("columns", {}), where), table.get("group"), table.get("time"),
                         table.get("higher_is_better"), table.get("submits"))
        target = TabularTarget(name, sources["train"], sources["test"], spec,
                               {"model": "linear", "split": "shuffled"}, DECLARED_FAMILIES, {"auto": AUTO},
                               "auto", DECLARED_MODELS, archive=archive, sample=sources.get("sample"),
                               kaggle=table.get("kaggle"))
        targets.update(SeveralLabels.of(target, labels) if len(labels) > 1 else {name: target})
    return targets


def _labels(label, where: str) -> list[str]:
    """``label = "y"``, or several columns: ``label = ["y1", "y2"]``."""
    labels = [label] if isinstance(label, str) else label
    if not isinstance(labels, list) or not labels or not all(isinstance(c, str) and c for c in labels) \
            or len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: label must be a column name or a list of distinct column names")
    return labels


@dataclass(frozen=True)
class SeveralLabels:
    """A competition with several label columns (multi-target): a tabular target per column,
    ``NAME.COLUMN``, whose features leave the other labels out (the same features and, with
    the same split and seed, the same folds); their submissions join into one, in the sample's
    format. Commands on NAME run on every column's target."""

    name: str
    parts: tuple
    whole: TabularTarget  # where the files are, the sample among them
    commands = frozenset({"download", "preprocess", "cv", "train", "submit", "run", "status"})

    @classmethod
    def of(cls, target: TabularTarget, labels: list[str]) -> dict:
        parts = tuple(replace(target, name=f"{target.name}.{label}", sample=None, part_of=target.name,
                              spec=replace(target.spec, label=label,
                                           other_labels=tuple(c for c in labels if c != label)))
                      for label in labels)
        return {target.name: cls(target.name, parts, target), **{p.name: p for p in parts}}

    def refuse(self, command: str) -> None:
        if command not in self.commands:
            raise UsageError(f"target {self.name} has several labels: {command} one of "
                             f"{', '.join(p.name for p in self.parts)}")

    @property
    def flags(self) -> frozenset:
        return self.parts[0].flags

    @property
    def choices(self) -> dict:
        return self.parts[0].choices

    @property
    def kaggle(self) -> str | None:
        return self.whole.kaggle

    def sample_path(self, data_dir: Path) -> Path | None:
        return self.whole.sample_path(data_dir)

    def kaggle_zip(self, data_dir: Path) -> Path | None:
        return self.whole.kaggle_zip(data_dir)


def _metric_reference(metric, base: Path):
    """A custom metric in a file (``scoring.py:gini``) names the file from pipeline.toml's folder."""
    if isinstance(metric, str) and ":" in metric and metric.rpartition(":")[0].endswith(".py"):
        module, _, function = metric.rpartition(":")
        return f"{(base / module).expanduser().resolve()}:{function}"
    return metric


def _columns(declared, where: str) -> dict:
    """``columns = {date = ["arrival"], drop = ["flight"]}``: roles and their columns (checked
    against the table's columns at preprocess)."""
    if not isinstance(declared, dict) or not all(
            isinstance(v, list) and all(isinstance(c, str) for c in v) for v in declared.values()):
        raise ConfigError(f"{where}: columns must be a table of roles, each a list of column names "
                          '(e.g. columns = {date = ["arrival"], drop = ["flight"]})')
    return declared


def _source(target: str, role: str, value: str, sha1: str | None, base: Path, where: str) -> DataFile | Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {role} must be a path or URL string")
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


def all_targets(workspace: Workspace) -> dict:
    return {**BUILTIN, **declared_targets(workspace)}


def get_target(name: str, workspace: Workspace):
    targets = all_targets(workspace)
    if name not in targets:
        raise UsageError(f"unknown target {name!r}; choose from {', '.join(targets)} "
                         f"(declare more in {workspace.config_file.name})")
    return targets[name]


def check_flags(target, given: dict) -> dict:
    """Flags given for ``target``: each must apply to it and be one of its choices."""
    for key, value in given.items():
        if key not in target.flags:
            raise ParamError(key, value, f"does not apply to target {target.name}")
        choices = target.choices.get(key)
        if choices is not None and value not in choices:
            raise ParamError(key, value, f"not one of {', '.join(choices)} for target {target.name}")
    return target.flag_values(given)
