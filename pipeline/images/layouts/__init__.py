"""How a declared image competition's files hold its images: each layout is a class in this
package, subclassing :class:`~pipeline.images.layouts.base.Layout`, named by the key of
pipeline.toml that declares it: ``images = "train/"`` a folder of image files with a CSV of
labels (:mod:`.folder`), ``pixels = "pixel"`` CSVs of pixel columns (:mod:`.pixels`). Each
writes the competition's images into one tensor file (:mod:`pipeline.images.store`), made once
per input.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.images import store
from pipeline.images.layouts.base import ImageSpec, Layout
from pipeline.images.layouts.folder import ImageFolder
from pipeline.images.layouts.pixels import PixelTable
from pipeline.progress import Progress

# the key of pipeline.toml that declares a layout -> its class
LAYOUTS: dict[str, type[Layout]] = {"images": ImageFolder, "pixels": PixelTable}


def preprocess(layout: Layout, files: dict[str, Path], spec: ImageSpec, folder: Path,
               progress: Progress) -> tuple[list[Path], dict]:
    """The tensor file and its manifest in ``folder``, made unless they were made from the same inputs."""
    key = {"spec": spec.values(), **layout.key(files)}
    manifest = store.current(folder, key)
    if manifest is None:
        manifest = {**layout.write(files, spec, folder, progress), "key": key}
        store.save_manifest(folder, manifest)
    return [folder / store.IMAGES, folder / store.MANIFEST], {
        "train": manifest["train"], "test": manifest["test"], "shape": manifest["shape"][1:],
        "images_per_second": manifest["images_per_second"]}
