"""What an image target's stages train on, score and predict, whatever its images came from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.images.models import Shape


@dataclass(frozen=True)
class ImageSet:
    """uint8 images (N, H, W) or (N, C, H, W) on the CPU: the labelled ones, the ones a
    submission predicts, and where a trained model is scored. ``scored``: labelled images kept
    apart from training (Fashion-MNIST's test set); without them, evaluate scores the model on
    the part of the labelled images held out of every fit."""

    images: torch.Tensor
    labels: torch.Tensor  # class indices (long)
    test: torch.Tensor
    test_ids: list  # the submission's ids, one per test image
    classes: list  # each output's class, in order: what a submission writes
    names: list  # each class as the reports show it
    shape: Shape
    scored: tuple[torch.Tensor, torch.Tensor] | None = None

    def split(self, seed: int, valid_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(the rows a single model trains on, the held-out rows that draw its curves): a
        seeded permutation's first ``valid_fraction`` of the rows are held out."""
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(seed))
        n_valid = int(round(len(self.labels) * valid_fraction))
        return order[n_valid:], order[:n_valid]

    def learnable(self, rest: torch.Tensor) -> torch.Tensor:
        """The rows K folds and the model fit after them learn from: every row when a scored set
        judges the model, else ``rest``, the rows not held out for evaluate."""
        return torch.arange(len(self.labels)) if self.scored is not None else rest

    def evaluation(self, held: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels evaluate scores a model on: the scored set, else the held-out rows."""
        return self.scored if self.scored is not None else (self.images[held], self.labels[held])
