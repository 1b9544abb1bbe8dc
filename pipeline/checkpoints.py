"""Model checkpoints: plain tensors and values under a format tag, saved atomically and loaded
with ``torch.load(weights_only=True)``, so a tampered file can never run code. A missing,
foreign or damaged file is one line that says which command makes it again."""

from __future__ import annotations

import contextlib
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
