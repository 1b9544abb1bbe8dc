"""Image files to uint8 arrays with Pillow: the size and colour most of them have, and every one
decoded and resized to one size, in parallel and streamed.

Decoding runs in worker processes (forked where the platform allows it, as torch's DataLoader
does; their work is Pillow's and numpy's, never torch's), a chunk of files per task, with at
most two chunks per worker in flight: the caller gets the chunks in order and writes each away,
so a folder larger than memory never loads whole. Small jobs decode in this process.

Pillow's PNG reader parses each file's chunks in Python, which holds the GIL: for small images
threads are no faster than one (3,000 28x28 PNGs on this project's busy 2-core machine: 6,000 and
12,000 images/s in two spells, threads or not); processes do not share the GIL. torchvision's
decoder is not used: it decodes faster alone (20,000 32x32 colour PNGs on 2 processes, the
vision environment: 31,900-32,200 images/s against Pillow's 19,700-27,800, a busy machine), but
it cannot be imported beside the CPU torch wheel most installs have, decoding is a few seconds
of an image competition's minutes (4 s of 262 s for 70,000 PNGs), and its resizing would make
the tensor file, and so the scores, depend on the environment.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.errors import DataError
from pipeline.progress import Step

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
GREY = frozenset({"1", "L", "LA", "I", "I;16", "F"})  # Pillow's modes without colour
SMALLEST, LARGEST = 16, 64  # a chosen size's sides: what LeNet takes, and what trains on CPUs
CHUNK_BYTES = 8 << 20  # a task's images: big enough to pay for sending, small enough to bound memory
SURVEYED = 200  # images whose size and colour choose what all are decoded to


def survey(files: Iterable[str | Path | IO[bytes]]) -> tuple[list[int], int]:
    """The most common size [height, width] among ``files`` (read from their headers), brought
    within [16, 64] pixels a side keeping its shape; and 3 channels if any has colour, else 1."""
    sizes, channels = Counter(), 1
    for file in files:
        with _opened(file) as image:
            sizes[image.size] += 1
            channels = max(channels, 1 if image.mode in GREY else 3)
    (width, height), _ = sizes.most_common(1)[0]
    scale = min(1.0, LARGEST / max(width, height))
    scale = max(scale, SMALLEST / max(1, min(width, height)))
    return [max(SMALLEST, round(height * scale)), max(SMALLEST, round(width * scale))], channels


def evenly(items: list, count: int = SURVEYED) -> list:
    """Up to ``count`` of ``items``, spread over the whole list."""
    step = max(1, len(items) // count)
    return items[::step][:count]


def decode(paths: list[Path], size: list[int], channels: int, resize: bool, step: Step,
           workers: int | None = None, chunk: int | None = None) -> Iterator[np.ndarray]:
    """Each chunk of ``paths`` as uint8 (n, H, W) for one channel or (n, 3, H, W), in order;
    ``resize`` false: an image of another size is refused. ``step`` advances an image at a time."""
    per_chunk = chunk or max(1, min(4096, CHUNK_BYTES // (channels * size[0] * size[1])))
    chunks = [paths[i: i + per_chunk] for i in range(0, len(paths), per_chunk)]
    workers = workers or _workers()
    if workers < 2 or len(chunks) < 2:
        for part in chunks:
            yield decode_chunk(part, size, channels, resize)
            step.advance(len(part))
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        pending: deque = deque()
        for part in chunks:
            pending.append((len(part), pool.submit(decode_chunk, part, size, channels, resize)))
            if len(pending) >= 2 * workers:
                yield _done(pending, step)
        while pending:
            yield _done(pending, step)


def _done(pending: deque, step: Step) -> np.ndarray:
    """The oldest chunk in flight, once decoded; a failure in it cancels the others."""
    count, future = pending.popleft()
    try:
        decoded = future.result()
    except BaseException:
        for _, other in pending:
            other.cancel()
        raise
    step.advance(count)
    return decoded


def decode_chunk(paths: list[Path], size: list[int], channels: int, resize: bool) -> np.ndarray:
    """The images at ``paths``, in order, each converted to grey or RGB and resized to ``size``."""
    out = np.empty((len(paths), *([channels] if channels > 1 else []), *size), dtype=np.uint8)
    for i, path in enumerate(paths):
        with _opened(path) as image:
            out[i] = _pixels(image, path, size, channels, resize)
    return out


def _pixels(image: Image.Image, path: Path, size: list[int], channels: int, resize: bool) -> np.ndarray:
    height, width = size
    if image.size != (width, height) and not resize:
        raise DataError(f"{path}: {image.size[1]}x{image.size[0]} pixels, not the declared {height}x{width}; "
                        "resize it, or drop resize = false to resize every image to size")
    mode = "L" if channels == 1 else "RGB"
    try:
        image.draft(mode, (width, height))  # a JPEG decodes at the smallest scale still at least this size
        image = image.convert(mode)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
        pixels = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise DataError(f"{path}: cannot decode the image ({exc}); replace or remove it") from None
    return pixels.transpose(2, 0, 1) if channels > 1 else pixels


@contextlib.contextmanager
def _opened(file: str | Path | IO[bytes]) -> Iterator[Image.Image]:
    """An image file opened by Pillow (headers only); a file that is not one is a one-line error."""
    try:
        image = Image.open(file)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        name = file if isinstance(file, (str, Path)) else file.name  # a file object: named by its opener
        raise DataError(f"{name}: not an image Pillow can read ({type(exc).__name__}); replace or remove it") from None
    with image:
        yield image


def _workers() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
