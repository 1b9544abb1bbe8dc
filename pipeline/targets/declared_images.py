"""An image competition declared in pipeline.toml from Kaggle's files: a folder of images with a
CSV of labels, or CSVs of pixels (:mod:`pipeline.images.layouts`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import ParamError
from pipeline.hub import DataFile
from pipeline.images import declared as declared_stages, layouts, store
from pipeline.images.layouts import ImageSpec, Layout
from pipeline.images.sets import ImageSet
from pipeline.metrics import Metric
from pipeline.progress import Progress
from pipeline.submissions import like_sample
from pipeline.tabular.tables import read_csv
from pipeline.targets import files
from pipeline.targets.images import ImageTarget


@dataclass(frozen=True)
class DeclaredImages(ImageTarget):
    """Its files (``sources``, by the keys of pipeline.toml that name them) come from Kaggle's zip,
    an archive, or paths and URLs; preprocess makes them one tensor file, a part of its labelled
    images (``valid_fraction``) is held out of every fit for evaluate, and a submission holds what
    its ``metric`` submits, in the sample's format when there is a sample."""

    layout: Layout
    spec: ImageSpec
    metric: Metric
    sources: dict  # role -> a member path of the archive, a local path or a hub entry
    archive: DataFile | Path | None = None
    kaggle: str | None = None
    stages = declared_stages.STAGES

    @property
    def _origin(self) -> files.Origin:
        return files.Origin(self.name, self.archive, self.kaggle)

    def configure(self, stored: dict, flags: dict) -> tuple[dict, None]:
        params, config = super().configure(stored, flags)
        if not 0 < float(params["valid_fraction"]) < 1:
            raise ParamError("valid_fraction", params["valid_fraction"], f"target {self.name} holds out a part of "
                             "its labelled images for evaluate: give a fraction between 0 and 1")
        return params, config

    def fetch(self, data_dir: Path, mirrors: list[str]) -> list[Path]:
        """Its files' paths; its folders' images are preprocess's to follow (by their names and sizes)."""
        roles = [role for role in self.layout.roles if role in self.sources]
        paths = self._origin.fetch([self.sources[role] for role in roles], data_dir, mirrors,
                                   f"{'/'.join(roles)} in [target.{self.name}]")
        return [path for path in paths if path.is_file()]

    def kaggle_zip(self, data_dir: Path) -> Path | None:
        return self._origin.kaggle_zip(data_dir)

    def sample_path(self, data_dir: Path) -> Path | None:
        return self._origin.where(self.sources["sample"], data_dir) if "sample" in self.sources else None

    def preprocess(self, data_dir: Path, progress: Progress) -> tuple[list[Path], dict]:
        where = {role: self._origin.where(source, data_dir) for role, source in self.sources.items()}
        return layouts.preprocess(self.layout, where, self.spec, data_dir / self.name, progress)

    def images(self, data_dir: Path) -> ImageSet:
        return store.load(data_dir / self.name, f"pipeline preprocess {self.name}")

    def submission(self, data: ImageSet, probabilities: np.ndarray, data_dir: Path) -> tuple[pd.DataFrame, dict]:
        """The submission frame of the test images' class ``probabilities`` and its checks, in the
        sample's format when there is one: its columns in its order (its one label column named as
        it names it: Digit Recognizer's train.csv has label, its sample Label), its ids in its order."""
        sample = self.sample_path(data_dir)
        table = None if sample is None else read_csv(sample)
        label = str(table.columns[1]) if table is not None and len(table.columns) == 2 else self.spec.label
        frame, checks = self.metric.submits.frame({self.spec.id: data.test_ids}, label, probabilities, data.classes,
                                                  self.metric)
        checks = dict(checks, id_column=self.spec.id, expected_ids=data.test_ids)
        return (frame, checks) if table is None else like_sample(frame, checks, table, str(sample))
