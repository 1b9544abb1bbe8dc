"""Choosing the training device and seeding, shared by every trainer."""

from __future__ import annotations

import torch

from pipeline.errors import UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when a GPU is present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA GPU is visible to torch; use --device cpu or auto")
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise UsageError(f"--device {name!r} is not one of {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A private RNG on ``device``, so runs with the same seed and device draw the same numbers."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator
