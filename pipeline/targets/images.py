"""An image target: an image-classification competition, its classifiers' params and stages;
Fashion-MNIST's files come from the data hub (:class:`HubImages`), a competition declared in
pipeline.toml from Kaggle's files (:class:`~pipeline.targets.declared_images.DeclaredImages`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import hub
from pipeline.hub import DataFile
from pipeline.images import stages as image_stages
from pipeline.images.train import DEFAULTS as CLASSIFIERS, OPTIMIZERS as IMAGE_OPTIMIZERS, check_tta, \
    SCHEDULES as IMAGE_SCHEDULES
from pipeline.targets.base import Target

IMAGE_FLAGS = frozenset({"model", "valid_fraction", "folds", "seed", "hidden", "dropout", "epochs", "lr",
                         "weight_decay", "batch_size", "optimizer", "schedule", "augment", "flip", "tta"})
# the params that are the target's, not a classifier's
IMAGE_DEFAULTS = {"model": "mlp", "valid_fraction": 0.1, "folds": 0, "seed": 0, "tta": False}


@dataclass(frozen=True)
class ImageTarget(Target):
    """An image-classification competition; each model keeps its own checkpoint and lock section.
    params.toml may hold any classifier param (``known`` is None): fit_classifier checks them."""

    name: str
    defaults: dict
    flags = IMAGE_FLAGS
    stages = image_stages.STAGES
    commands = frozenset({"download", "preprocess", "train", "evaluate", "submit", "run", "status"})

    def refusal(self, command: str) -> str:
        if command in ("cv", "sweep"):
            return f"{self.name} is an image target: train it with folds >= 2 for its fold scores"
        return f"target {self.name} has no {command} command"

    def section(self, params: dict) -> str:
        return f"{self.name}/{params['model']}"

    @property
    def choices(self) -> dict[str, tuple]:
        return {"model": tuple(CLASSIFIERS), "optimizer": IMAGE_OPTIMIZERS, "schedule": IMAGE_SCHEDULES}

    def configure(self, stored: dict, flags: dict) -> tuple[dict, None]:
        params = {**self.defaults, **stored, **flags}
        check_tta(params["tta"], params.get("flip", True))  # before training, not after it
        return params, None

    def flag_values(self, given: dict) -> dict:
        """The classifiers' MLP has one hidden layer: ``--hidden 256`` is a width, not a list."""
        hidden = given.get("hidden")
        if isinstance(hidden, list) and len(hidden) == 1:
            given = {**given, "hidden": hidden[0]}
        return given


@dataclass(frozen=True)
class HubImages(ImageTarget):
    """Images whose files the data hub holds and verifies: Fashion-MNIST's four IDX files."""

    files: tuple[DataFile, ...] = ()

    def fetch(self, data_dir: Path, mirrors: list[str]) -> list[Path]:
        return [hub.download(f, data_dir, mirrors) for f in self.files]
