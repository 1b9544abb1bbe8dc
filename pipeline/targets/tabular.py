"""A tabular target: a CSV competition, whose params resolve into a typed recipe
(:mod:`pipeline.tabular.recipe`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline import hub
from pipeline.errors import DataError
from pipeline.folds import SPLITS
from pipeline.hub import DataFile
from pipeline.tabular import stages as tabular_stages
from pipeline.tabular.ensemble import BLENDS
from pipeline.tabular.features import FIT_ON, SCALINGS
from pipeline.tabular.members import FAMILIES
from pipeline.tabular.optim import OPTIMIZERS
from pipeline.tabular.presets import FAMILY_DEFAULTS
from pipeline.tabular.recipe import Recipe, known_params, resolve
from pipeline.tabular.stacked import ACTIVATIONS
from pipeline.tabular.tables import TableSpec
from pipeline.tabular.trainer import SCHEDULES
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
                "blend": BLENDS, "recipe": tuple(self.presets)}

    def configure(self, stored: dict, flags: dict, single: bool = False) -> tuple[dict, Recipe]:
        """The resolved recipe, and its params as plain values (what reports and the lock record)."""
        recipe = resolve(self, stored, flags, single=single)
        return recipe.used_params(self.spec.scorer.task), recipe

    def time_limit(self, config: Recipe) -> float | None:
        return config.time_limit

    def _archive_dir(self, data_dir: Path) -> Path:
        return data_dir / (self.part_of or self.name) / "archive"  # a label column's: its competition's

    def table_paths(self, data_dir: Path) -> tuple[Path, Path]:
        """Where the train and test CSVs are once :meth:`fetch` has run."""
        return tuple(self._where(source, data_dir) for source in (self.train, self.test))

    def sample_path(self, data_dir: Path) -> Path | None:
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
