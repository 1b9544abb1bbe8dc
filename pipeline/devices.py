"""Choosing the training device and seeding, shared by every trainer."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from pipeline.errors import ParamError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when a GPU is present, else the CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParamError("device", name, "no CUDA GPU is visible to torch; use cpu or auto")
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise ParamError("device", name, f"not one of {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A private RNG on ``device``, so runs with the same seed and device draw the same numbers."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


@contextmanager
def one_cpu_thread(device: torch.device, enabled: bool = True):
    """Run small models with one CPU thread: their steps are a handful of small ops, and a second
    thread only adds synchronisation, which stalls whenever another process holds a core (d2l
    5-fold on a busy 2-core machine: 0.4 s with 1 thread, 4-30 s with 2; a 4-config MLP: 44 s
    vs 237 s). No effect on other devices or when not ``enabled``."""
    if device.type != "cpu" or not enabled:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
