"""Where a declared competition's files come from, whatever its kind: Kaggle's zip from the
official client (``kaggle``), an archive (``archive``: a URL or a path, unpacked with the hub's
safe extraction), or each file a local path or a URL; and where each lies once fetched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline import hub
from pipeline.errors import DataError
from pipeline.hub import DataFile


@dataclass(frozen=True)
class Origin:
    """``folder``: the competition's folder under the data folder (a label column's target shares
    its competition's); ``archive`` and ``kaggle`` as pipeline.toml gives them."""

    folder: str
    archive: DataFile | Path | None = None
    kaggle: str | None = None

    @property
    def packed(self) -> bool:
        """Whether the files are members of one zip or archive."""
        return self.archive is not None or self.kaggle is not None

    def archive_dir(self, data_dir: Path) -> Path:
        return data_dir / self.folder / "archive"

    def where(self, source: DataFile | Path | str, data_dir: Path) -> Path:
        """Where ``source`` (a member path, a local path or a hub entry) lies once fetched."""
        if self.packed:
            return self.archive_dir(data_dir) / source
        return source if isinstance(source, Path) else data_dir / source.path

    def fetch(self, sources: list, data_dir: Path, mirrors: list[str], fix: str) -> list[Path]:
        """Download (and verify) what is remote, unpack an archive: where ``sources`` lie (Kaggle's
        zip first, when the files come from it). A member the archive lacks is a one-line error
        that says what to ``fix`` (the keys of pipeline.toml that name them)."""
        if self.kaggle is not None:
            hub.extract_archive(self._kaggle_zip(data_dir), self.archive_dir(data_dir))
        elif isinstance(self.archive, DataFile):
            hub.download_extract(self.archive, data_dir, mirrors, folder=self.archive_dir(data_dir))
        elif self.archive is not None:
            hub.extract_archive(self.archive, self.archive_dir(data_dir))
        else:
            for source in sources:
                if isinstance(source, DataFile):
                    hub.download(source, data_dir, mirrors)
        paths = [self.where(source, data_dir) for source in sources]
        for path, member in zip(paths, sources):
            if self.packed and not path.exists():
                raise DataError(f"archive {self.archive_name} has no member {member!r}; fix {fix}")
        return paths if self.kaggle is None else [self._kaggle_zip(data_dir), *paths]

    def kaggle_zip(self, data_dir: Path) -> Path | None:
        return None if self.kaggle is None else data_dir / self.folder / f"{self.kaggle}.zip"

    def _kaggle_zip(self, data_dir: Path) -> Path:
        """The competition's zip from Kaggle's client, fetched once: the lock records its SHA-1,
        so a changed zip makes every later stage stale."""
        path = self.kaggle_zip(data_dir)  # one download for every label column
        if not path.is_file():
            from pipeline import kaggle_client

            kaggle_client.Competition(self.kaggle).download(path.parent)
        return path

    @property
    def archive_name(self) -> str:
        if self.kaggle is not None:
            return f"Kaggle's {self.kaggle}.zip"
        return self.archive.url if isinstance(self.archive, DataFile) else str(self.archive)
