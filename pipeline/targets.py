"""Competition targets: the built-in ``house`` and ``fashion``, and tabular targets declared in
the workspace's ``pipeline.toml``::

    [target.churn]
    train = "data/churn_train.csv"     # a path (relative to pipeline.toml) or an http(s) URL
    test = "https://example.org/churn_test.csv"
    test_sha1 = "…"                    # optional: train_sha1 / test_sha1 verify the files
    id = "customer"
    label = "churned"
    task = "classification"            # or "regression"
    metric = "accuracy"                # log_rmse, rmse or accuracy

A target's params (model, lr, folds, …) start from its defaults here, are overridden by the
``[NAME]`` table of the workspace's ``params.toml``, then by command-line flags.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from pipeline.errors import DataError, UsageError
from pipeline.hub import DATA_HUB, GROUPS, DataFile, verify
from pipeline.tabular import METRICS, FeatureParams, TableSpec
from pipeline.trainer import TrainParams
from pipeline.workspace import Workspace

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# d2l 4.10's recipe, reachable with flags (see the README): linear, raw prices, lr 5, 5 contiguous folds.
D2L_HOUSE = {"model": "linear", "lr": 5.0, "weight_decay": 0.0, "batch_size": 64, "epochs": 100,
             "log_target": False, "split": "contiguous", "log_skewed": 0.0}
# The best recipe measured on house (README, "Leaderboard quality"): log prices, log1p of skewed
# columns, winsorized numeric columns, and the geometric mean of a Lasso, an RBF support-vector
# machine and boosted trees on random 30% feature subsets (averaged over 3 seeds), fit per fold.
BEST_HOUSE = {
    "log_target": True, "log_skewed": 0.75, "clip_quantile": 0.005, "split": "contiguous", "seeds": 3,
    "ensemble": [
        {"model": "lasso", "alpha": 0.0005, "max_iter": 50000},
        {"model": "svr", "C": 20.0, "epsilon": 0.03, "gamma": 0.001},
        {"model": "gbm", "learning_rate": 0.03, "max_iter": 1500, "max_leaf_nodes": 7, "min_samples_leaf": 2,
         "l2_regularization": 1.0, "max_features": 0.3, "random_state": 0},
    ],
}
CV_DEFAULTS = {"folds": 5, "split": "contiguous", "seed": 0}
# An ensemble is a list of tables, each overriding the base params for one member; every member
# is trained `seeds` times (torch: different initialisations; scikit-learn members with a
# random_state: random_state, random_state + 1, ...) and the predictions are averaged.
RECIPE_DEFAULTS = {"ensemble": [], "seeds": 1}


def tabular_defaults(**overrides) -> dict:
    """Every param of a tabular target with its default: features, training, folds."""
    params = {f.name: f.default for f in fields(FeatureParams)}
    params.update({f.name: f.default for f in fields(TrainParams)})
    params["hidden"] = list(params["hidden"])
    params.update(CV_DEFAULTS)
    params.update(RECIPE_DEFAULTS)
    params.update(overrides)
    return params


@dataclass(frozen=True)
class TabularTarget:
    """``presets`` are named recipes over ``defaults``; ``recipe`` in params picks one. Without
    one, a ``--model`` flag means "this single model" (the defaults), else ``default_preset``."""

    name: str
    train: DataFile | Path  # a hub entry to download, or a local file used in place
    test: DataFile | Path
    spec: TableSpec
    defaults: dict = field(default_factory=tabular_defaults)
    presets: dict = field(default_factory=dict)
    default_preset: str | None = None
    kind: str = "tabular"

    @property
    def hub_files(self) -> list[DataFile]:
        return [f for f in (self.train, self.test) if isinstance(f, DataFile)]


@dataclass(frozen=True)
class ImageTarget:
    name: str
    files: tuple[DataFile, ...]
    defaults: dict
    kind: str = "image"

    @property
    def hub_files(self) -> list[DataFile]:
        return list(self.files)


HOUSE = TabularTarget("house", DATA_HUB["kaggle_house_train"], DATA_HUB["kaggle_house_test"],
                      TableSpec(id="Id", label="SalePrice", task="regression", metric="log_rmse"),
                      tabular_defaults(**D2L_HOUSE), {"d2l": {}, "best": BEST_HOUSE}, "best")
FASHION = ImageTarget("fashion", tuple(DATA_HUB[n] for n in GROUPS["fashion"]),
                      {"model": "mlp", "valid_fraction": 0.1, "folds": 0, "seed": 0})
BUILTIN = {"house": HOUSE, "fashion": FASHION}
TARGET_KEYS = {"train", "test", "train_sha1", "test_sha1", "id", "label", "task", "metric"}


def read_toml(path: Path) -> dict:
    """A workspace TOML file as a dict (empty when absent); a syntax error is one line."""
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid TOML ({exc})") from None


def declared_targets(workspace: Workspace) -> dict[str, TabularTarget]:
    """Targets declared in ``pipeline.toml``; every mistake is a one-line DataError."""
    path = workspace.config_file
    config = read_toml(path)
    targets = {}
    for name, table in config.get("target", {}).items():
        where = f"{path} [target.{name}]"
        if name in BUILTIN:
            raise DataError(f"{where}: {name!r} is a built-in target; pick another name")
        if not isinstance(table, dict):
            raise DataError(f"{where}: expected a table of keys")
        unknown = sorted(set(table) - TARGET_KEYS)
        if unknown:
            raise DataError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TARGET_KEYS))})")
        missing = [k for k in ("train", "test", "id", "label") if k not in table]
        if missing:
            raise DataError(f"{where}: missing key {missing[0]!r}")
        task = table.get("task", "regression")
        metric = table.get("metric", "rmse" if task == "regression" else "accuracy")
        if METRICS.get(metric) != task:
            raise DataError(f"{where}: metric {metric!r} does not fit task {task!r} "
                            f"(choose from {', '.join(m for m, t in METRICS.items() if t == task)})")
        sources = {role: _source(name, role, table[role], table.get(f"{role}_sha1"), path.parent, where)
                   for role in ("train", "test")}
        defaults = tabular_defaults(lr=0.01, weight_decay=1e-4, epochs=100, batch_size=128,
                                    log_target=metric == "log_rmse", split="shuffled")
        targets[name] = TabularTarget(name, sources["train"], sources["test"],
                                      TableSpec(table["id"], table["label"], task, metric), defaults)
    return targets


def _source(target: str, role: str, value: str, sha1: str | None, base: Path, where: str) -> DataFile | Path:
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: {role} must be a path or URL string")
    if value.startswith(("http://", "https://")):
        suffix = Path(value.split("?")[0]).suffix or ".csv"
        return DataFile(f"{target}_{role}", value, sha1, None, f"{target}/{role}{suffix}")
    path = (base / value).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"{where}: {role} file {path} does not exist")
    if sha1:
        if not verify(DataFile(f"{target}_{role}", str(path), sha1, None, path.name), path):
            raise DataError(f"{where}: {path} does not match {role}_sha1 {sha1}")
    return path


def all_targets(workspace: Workspace) -> dict:
    return {**BUILTIN, **declared_targets(workspace)}


def get_target(name: str, workspace: Workspace):
    targets = all_targets(workspace)
    if name not in targets:
        raise UsageError(f"unknown target {name!r}; choose from {', '.join(targets)} "
                         f"(declare more in {workspace.config_file.name})")
    return targets[name]


def load_params_file(workspace: Workspace, target: str) -> dict:
    """The ``[target]`` table of ``params.toml`` (empty when absent)."""
    path = workspace.params_file
    table = read_toml(path).get(target, {})
    if not isinstance(table, dict):
        raise DataError(f"{path}: [{target}] must be a table")
    return dict(table)
