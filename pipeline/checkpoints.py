"""Model checkpoints: plain tensors and values under a format tag, saved atomically and loaded
with ``torch.load(weights_only=True)``, so a tampered file can never run code. A missing,
foreign or damaged file is one line that says which command makes it again."""

from __future__ import annotations

import contextlib
import importlib
import warnings
from pathlib import Path
from typing import Iterator

import torch

from pipeline.errors import DataError, PipelineError
from pipeline.workspace import atomic_path


def save(path: Path, format: str, payload: dict) -> Path:
    with atomic_path(path) as tmp:
        torch.save({"format": format, **payload}, tmp)
    return path


def load(path: Path, format: str, what: str, remake: str) -> dict:
    """The checkpoint at ``path`` if it holds ``format``; ``what`` names the kind of checkpoint
    in the error and ``remake`` the command that writes it again."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path} is missing; run `{remake}` first") from None
    except Exception as exc:  # pickle errors, truncated zip, non-tensor objects: all mean "not ours"
        raise DataError(f"{path} is not a pipeline checkpoint ({type(exc).__name__}); "
                        f"delete it and run `{remake}` again") from None
    if not isinstance(state, dict) or state.get("format") != format:
        raise DataError(f"{path} is not a pipeline {what} checkpoint; delete it and run `{remake}` again")
    return state


@contextlib.contextmanager
def restoring(path: Path, remake: str) -> Iterator[None]:
    """Rebuilding models from a checkpoint's contents: a missing key or a wrong shape means
    the file is damaged."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, PipelineError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path} is damaged ({reason}); delete it and run `{remake}` again") from None


# What a packed estimator may hold beyond skops' own trusted types. skops rebuilds only the
# types it is told to trust and never runs pickle's arbitrary calls: here the classes of
# scikit-learn, numpy and scipy (fitted trees' TreePredictor, splines' BSpline), the array-API
# shims a BSpline keeps (asarray), and this package's feature transformers and their functions.
TRUSTED_CLASSES = ("sklearn.", "numpy.", "scipy.")
TRUSTED_MODULES = ("pipeline.tabular.features.", "pipeline.tabular.encoders.", "pipeline.tabular.columns.",
                   "pipeline.tabular.members.scikit.", "scipy._lib.array_api_compat.")


def pack(obj) -> torch.Tensor:
    """A fitted scikit-learn object as a uint8 tensor that a weights-only checkpoint can hold."""
    import skops.io

    return torch.frombuffer(bytearray(skops.io.dumps(obj)), dtype=torch.uint8)


def unpack(data: torch.Tensor):
    """The object :func:`pack` stored; a type outside :data:`TRUSTED_MODULES` raises ValueError
    (which :func:`restoring` reports as a damaged file)."""
    import skops.io

    raw = data.numpy().tobytes()
    untrusted = skops.io.get_untrusted_types(data=raw)
    foreign = [name for name in untrusted if not (name.startswith(TRUSTED_MODULES)
                                                  or name.startswith(TRUSTED_CLASSES) and _is_class(name))]
    if foreign:
        raise ValueError(f"it holds a type this package does not trust ({foreign[0]})")
    return skops.io.loads(raw, trusted=untrusted)


def _is_class(dotted: str) -> bool:
    module, _, name = dotted.rpartition(".")
    try:
        return isinstance(getattr(importlib.import_module(module), name), type)
    except (ImportError, AttributeError):
        return False
