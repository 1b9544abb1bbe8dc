"""A declared image competition's preprocessed images: one uint8 tensor file (``images.npy``, the
labelled images then the test images) and its manifest (``manifest.json``: the file's SHA-1 and
shape, the classes, the labels, the test ids, the pixel statistics, and the key of what it was
made from).

The tensor file is written a chunk at a time, hashed and summed as it goes, so no more than a
chunk of images is ever in memory while it is made; the manifest is written after it, and
both atomically, so a manifest always describes a whole tensor file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import torch

from pipeline.errors import DataError
from pipeline.images.models import Shape
from pipeline.images.sets import ImageSet
from pipeline.workspace import atomic_path, write_json

FORMAT = "pipeline.images/1"
IMAGES, MANIFEST = "images.npy", "manifest.json"


LEVELS = np.arange(256) / 255  # each uint8 pixel value as the models read it


class Writer:
    """Appends chunks of images (n, *shape) to an open ``.npy`` file after its header, hashing
    every byte; the first ``labelled`` images' channel sums give their mean and std."""

    def __init__(self, handle: BinaryIO, count: int, shape: tuple[int, ...], labelled: int):
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (count, *shape)})
        self.handle, self.count, self.shape, self.labelled = handle, count, tuple(shape), labelled
        self.sha1, self.written = hashlib.sha1(header.getvalue()), 0
        channels = shape[0] if len(shape) == 3 else 1
        self.sums, self.squares = np.zeros(channels), np.zeros(channels)
        handle.write(header.getvalue())

    def write(self, chunk: np.ndarray) -> None:
        if chunk.dtype != np.uint8 or chunk.shape[1:] != self.shape:
            raise ValueError(f"a chunk of {chunk.dtype} {chunk.shape[1:]}, not uint8 {self.shape}")
        labelled = chunk[: max(0, self.labelled - self.written)]
        if len(labelled):  # each channel's count of each pixel value: no float copy of the chunk
            pixels = labelled.reshape(len(labelled), len(self.sums), -1)
            counts = np.stack([np.bincount(pixels[:, c].ravel(), minlength=256) for c in range(len(self.sums))])
            self.sums += counts @ LEVELS
            self.squares += counts @ np.square(LEVELS)
        data = memoryview(np.ascontiguousarray(chunk)).cast("B")
        self.sha1.update(data)
        self.handle.write(data)
        self.written += len(chunk)

    def statistics(self) -> tuple[list[float], list[float]]:
        """Each channel's pixel mean and std (of x / 255) over the labelled images."""
        n = max(1, self.labelled * int(np.prod(self.shape)) // len(self.sums))
        mean = self.sums / n
        std = np.sqrt(np.maximum(self.squares / n - mean**2, 0))
        return mean.tolist(), np.maximum(std, 1e-3).tolist()  # a constant channel divides by a small std, not 0


@contextlib.contextmanager
def writing(folder: Path, count: int, shape: tuple[int, ...], labelled: int) -> Iterator[Writer]:
    """A :class:`Writer` on ``folder/images.npy``, renamed into place when the block ends having
    written all ``count`` images; the manifest is the caller's to write next."""
    with atomic_path(folder / IMAGES) as tmp, open(tmp, "wb") as handle:
        writer = Writer(handle, count, shape, labelled)
        yield writer
        if writer.written != count:
            raise ValueError(f"wrote {writer.written} of {count} images")


def current(folder: Path, key: dict) -> dict | None:
    """The manifest in ``folder`` when it was made from ``key`` and its tensor file is there."""
    manifest = _read(folder)
    if manifest is None or manifest.get("key") != key or not (folder / IMAGES).is_file():
        return None
    return manifest


def save_manifest(folder: Path, manifest: dict) -> list[Path]:
    """Write the manifest; the preprocess stage's outputs."""
    write_json(folder / MANIFEST, {"format": FORMAT, **manifest})
    return [folder / IMAGES, folder / MANIFEST]


def _read(folder: Path) -> dict | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def load(folder: Path, remake: str) -> ImageSet:
    """The images of ``folder`` (labelled, then test) as an :class:`ImageSet` whose held-out
    part evaluate scores; ``remake`` is the command that makes them again."""
    manifest = _read(folder)
    if manifest is None:
        raise DataError(f"{folder / MANIFEST} is missing or not a manifest of images; run `{remake}`")
    try:
        stored = np.load(folder / IMAGES, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder / IMAGES} is not a tensor file ({exc}); run `{remake}` again") from None
    if list(stored.shape) != manifest["shape"] or stored.dtype != np.uint8:
        raise DataError(f"{folder / IMAGES} holds {stored.dtype} {list(stored.shape)}, not the manifest's uint8 "
                        f"{manifest['shape']}; run `{remake}` again")
    n = manifest["train"]
    images, test = (torch.from_numpy(np.array(part)) for part in (stored[:n], stored[n:]))
    size = stored.shape[-2:]
    shape = Shape(1 if stored.ndim == 3 else stored.shape[1], size[0], size[1], len(manifest["classes"]),
                  tuple(manifest["mean"]), tuple(manifest["std"]))
    return ImageSet(images, torch.tensor(manifest["labels"], dtype=torch.long), test, manifest["test_ids"],
                    manifest["classes"], [str(c) for c in manifest["classes"]], shape)
