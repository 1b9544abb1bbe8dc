"""CSVs of pixels, as Digit Recognizer ships them: ``train.csv`` a label and a column per pixel
(``pixel0`` ... ``pixel783``, the image's rows one after the other), ``test.csv`` the same
pixel columns, with the id column or without it (then a row's id is its number from 1, as the
sample's ``ImageId`` counts). Read a chunk of rows at a time, so no table loads whole."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from pipeline.errors import DataError, shown
from pipeline.images import store
from pipeline.images.layouts.base import ImageSpec, Layout, fingerprint, id_column, labels, sample_ids, written
from pipeline.progress import Progress

ROWS = 4096  # rows read at a time


@dataclass(frozen=True)
class PixelTable(Layout):
    """``train`` and ``test``: CSVs whose pixel columns are ``prefix`` and the pixel's number;
    ``size`` [height, width] (declared, else the square their count makes); grey images."""

    prefix: str = "pixel"
    roles = ("train", "test", "sample")

    @classmethod
    def of(cls, value) -> PixelTable:
        return cls(value)

    def key(self, files: dict[str, Path]) -> dict:
        return {role: fingerprint(path) for role, path in files.items()}

    def columns(self, header, path: Path) -> list[str]:
        """The pixel columns of ``header`` (the CSV at ``path``'s), in their numbers' order."""
        pattern = re.compile(rf"{re.escape(self.prefix)}(\d+)")
        numbered = {int(m.group(1)): c for c in map(str, header) if (m := pattern.fullmatch(c))}
        if not numbered:
            raise DataError(f"{path}: no pixel columns {self.prefix}0, {self.prefix}1, ...; "
                            "fix pixels in pipeline.toml")
        return [numbered[k] for k in sorted(numbered)]

    def write(self, files: dict[str, Path], spec: ImageSpec, folder: Path, progress: Progress) -> dict:
        train = files["train"]
        header = _read(train, nrows=0).columns
        pixels = self.columns(header, train)
        size = _size(spec, len(pixels), train)
        test_columns = _read(files["test"], nrows=0).columns
        absent = [c for c in pixels if c not in test_columns]
        if absent:
            raise DataError(f"{files['test']}: no column {absent[0]!r}, which {train.name} has")
        others = [c for c in header if c not in pixels]
        if spec.label not in others:
            raise DataError(f"{train}: no column {spec.label!r} (its columns besides the pixels: "
                            f"{', '.join(map(str, others)) or 'none'}); fix label in pipeline.toml")
        table = _read(train, usecols=[spec.label])
        indices, classes = labels(table, spec, train, pd.Series(range(2, 2 + len(table))), "line")
        test_ids = _test_ids(files, spec, test_columns, pixels[0])
        started = time.perf_counter()
        step = progress.step("read pixels", len(indices) + len(test_ids), "image")
        with store.writing(folder, len(indices) + len(test_ids), tuple(size), len(indices)) as writer:
            for path in (files["train"], files["test"]):
                for chunk in _chunks(path, pixels, size):
                    writer.write(chunk)
                    step.advance(len(chunk))
        step.close()
        return written(writer, classes, indices, test_ids, time.perf_counter() - started)


def _read(path: Path, **options) -> pd.DataFrame:
    """pandas' reading of ``path``, its failures one line that names the file."""
    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path} is not a well-formed CSV: {str(exc).strip().splitlines()[-1]}") from None


def _size(spec: ImageSpec, count: int, path: Path) -> list[int]:
    """[height, width]: declared, else the square that ``count`` pixels make."""
    if spec.size is not None:
        if spec.size[0] * spec.size[1] != count:
            raise DataError(f"{path}: {count} pixel columns, not the declared size {list(spec.size)}'s "
                            f"{spec.size[0] * spec.size[1]}; fix size in pipeline.toml")
        return list(spec.size)
    side = math.isqrt(count)
    if side * side != count:
        raise DataError(f"{path}: {count} pixel columns do not make a square image; declare size = [HEIGHT, WIDTH]")
    return [side, side]


def _test_ids(files: dict[str, Path], spec: ImageSpec, columns, first_pixel: str) -> list:
    """The test rows' ids: its id column, else the rows' numbers from 1; a sample must hold the same ids."""
    if spec.id in columns:
        ids = id_column(_read(files["test"], usecols=[spec.id]), spec, files["test"]).tolist()
    else:
        ids = list(range(1, 1 + len(_read(files["test"], usecols=[first_pixel]))))
    if "sample" in files:
        listed = sample_ids(files["sample"], spec)
        known = set(map(str, ids))
        foreign = ~listed.astype(str).isin(known).to_numpy()
        if foreign.any() or len(listed) != len(ids):
            first = f" ({spec.id} {shown(listed[foreign].iloc[0])!r} is not one)" if foreign.any() else ""
            where = f"its {spec.id} column" if spec.id in columns else "its rows numbered from 1"
            raise DataError(f"{files['sample']}: its {len(listed)} ids are not the {len(ids)} of "
                            f"{files['test'].name} ({where}){first}")
    return ids


def _chunks(path: Path, pixels: list[str], size: list[int]) -> Iterator[np.ndarray]:
    """The CSV's images, ``ROWS`` at a time: a pixel that is not a whole number from 0 to 255 is a
    one-line error naming the file, the line and the column."""
    first = 2  # the first data row's line
    try:
        for chunk in pd.read_csv(path, usecols=pixels, chunksize=ROWS):
            chunk = chunk[pixels]
            values = chunk.to_numpy() if all(map(pd.api.types.is_integer_dtype, chunk.dtypes)) else \
                chunk.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
            bad = (values < 0) | (values > 255) | (values % 1 != 0) | pd.isna(values)
            if bad.any():
                row, column = np.argwhere(bad)[0]
                cell = chunk.iat[row, column]
                raise DataError(f"{path}: line {first + row}: {pixels[column]} is "
                                f"{'empty' if pd.isna(cell) else repr(shown(cell))}, not a whole number from 0 to 255")
            yield values.astype(np.uint8).reshape(len(chunk), *size)
            first += len(chunk)
    except pd.errors.ParserError as exc:
        raise DataError(f"{path} is not a well-formed CSV: {str(exc).strip().splitlines()[-1]}") from None
