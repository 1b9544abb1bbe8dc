"""A tabular target: a CSV competition, whose params resolve into a typed recipe
(:mod:`pipeline.tabular.recipe`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.folds import SPLITS
from pipeline.hub import DataFile
from pipeline.tabular import stages as tabular_stages
from pipeline.tabular.ensemble import BLENDS
from pipeline.tabular.features import FIT_ON, SCALINGS
from pipeline.tabular.members import FAMILIES
from pipeline.tabular.optim import OPTIMIZERS
from pipeline.tabular.presets import FAMILY_DEFAULTS
from pipeline.tabular.recipe import FINALS, Recipe, known_params, resolve
from pipeline.tabular.stacked import ACTIVATIONS
from pipeline.tabular.tables import TableSpec
from pipeline.tabular.trainer import SCHEDULES
from pipeline.targets import files
from pipeline.targets.base import Target


@dataclass(frozen=True)
class TabularTarget(Target):
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

    stages = tabular_stages.STAGES
    commands = frozenset({"download", "preprocess", "columns", "cv", "train", "submit", "predict", "sweep", "run",
                          "status", "blend"})

    @property
    def params_tables(self) -> tuple[str, ...]:
        """A label column's target takes its competition's [NAME], then its own [NAME.COLUMN]."""
        return (self.name,) if self.part_of is None else (self.part_of, self.name)

    def refusal(self, command: str) -> str:
        return f"target {self.name} has no test labels to {command} on; use cv"

    @property
    def known(self) -> frozenset:
        return frozenset(known_params())

    @property
    def flags(self) -> frozenset:
        return frozenset(known_params() - ({"recipe"} if not self.presets else set()))

    @property
    def choices(self) -> dict[str, tuple]:
        return {"model": tuple(FAMILIES), "optimizer": OPTIMIZERS, "schedule": SCHEDULES,
                "activation": tuple(ACTIVATIONS), "split": SPLITS, "fit_on": FIT_ON, "scaling": SCALINGS,
                "blend": BLENDS, "final": FINALS, "recipe": tuple(self.presets)}

    def configure(self, stored: dict, flags: dict, single: bool = False) -> tuple[dict, Recipe]:
        """The resolved recipe, and its params as plain values (what reports and the lock record)."""
        recipe = resolve(self, stored, flags, single=single)
        return recipe.used_params(self.spec.scorer.task), recipe

    def time_limit(self, config: Recipe) -> float | None:
        return config.time_limit

    @property
    def _origin(self) -> files.Origin:
        return files.Origin(self.part_of or self.name, self.archive, self.kaggle)  # a label column's: its competition's

    def table_paths(self, data_dir: Path) -> tuple[Path, Path]:
        """Where the train and test CSVs are once :meth:`fetch` has run."""
        return tuple(self._origin.where(source, data_dir) for source in (self.train, self.test))

    def sample_path(self, data_dir: Path) -> Path | None:
        return None if self.sample is None else self._origin.where(self.sample, data_dir)

    def fetch(self, data_dir: Path, mirrors: list[str]) -> list[Path]:
        """Download (and verify) what is remote, unpack an archive; the CSVs' paths."""
        sources = [s for s in (self.train, self.test, self.sample) if s is not None]
        return self._origin.fetch(sources, data_dir, mirrors, f"train/test/sample in [target.{self.name}]")

    def kaggle_zip(self, data_dir: Path) -> Path | None:
        return self._origin.kaggle_zip(data_dir)
