"""The data hub: the files the pipeline needs, where to get them, and how to trust them.

Like d2l's ``DATA_HUB``, every entry names a canonical URL and a hash, but a download here

* is served from the cache without any network request when the cached file verifies;
* tries mirrors first (a local folder or an HTTP base URL, e.g. ``../shared/datasets`` on
  machines without internet) and the canonical URL last;
* retries transient failures (connection errors, timeouts, 5xx, bodies cut short) with
  exponential backoff, and moves straight on to the next source after a 4xx or wrong bytes;
* reaches the cache only through a temporary file that is renamed into place after its hash
  verifies, so an interrupted or killed run never leaves a complete-looking bad file.

Which source served a file is logged at info level on the ``pipeline.hub`` logger.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import logging
import os
import posixpath
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests
from tqdm import tqdm

from pipeline.errors import DataError, DownloadError, UsageError
from pipeline.workspace import MIRROR_ENV, atomic_path

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # small enough for a smooth progress bar, large enough for fast hashing


@dataclass(frozen=True)
class DataFile:
    """One downloadable file.

    ``sha1`` hashes the file's bytes. ``payload_sha1`` hashes the decompressed payload of a
    ``.gz`` file, for files that mirrors recompress (the bytes differ, the payload does not).
    With both None any bytes are accepted. ``path`` is relative, in the cache and in a mirror.
    """

    name: str
    url: str
    sha1: str | None
    payload_sha1: str | None
    path: str


D2L_URL = "http://d2l-data.s3-accelerate.amazonaws.com/"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def _fashion(name: str, file: str, payload_sha1: str) -> DataFile:
    # Debian's copies (our shared mirror) are recompressed, so only the payload identifies them.
    return DataFile(name, FASHION_URL + file, None, payload_sha1, f"fashion-mnist/{file}")


DATA_HUB: dict[str, DataFile] = {
    entry.name: entry
    for entry in (
        DataFile("kaggle_house_train", D2L_URL + "kaggle_house_pred_train.csv",
                 "585e9cc93e70b39160e7921475f9bcd7d31219ce", None, "kaggle_house_pred_train.csv"),
        DataFile("kaggle_house_test", D2L_URL + "kaggle_house_pred_test.csv",
                 "fa19780a7b011d9b009e8bff8e99922a8ee2eb90", None, "kaggle_house_pred_test.csv"),
        _fashion("fashion_train_images", "train-images-idx3-ubyte.gz",
                 "b9bd999c0106c9b8b4b0cefce58c9a6060f27095"),
        _fashion("fashion_train_labels", "train-labels-idx1-ubyte.gz",
                 "4bccf37222e01638381eaa326bf730337a597267"),
        _fashion("fashion_test_images", "t10k-images-idx3-ubyte.gz",
                 "880056926db704f9f713097915f99da346f5b1d1"),
        _fashion("fashion_test_labels", "t10k-labels-idx1-ubyte.gz",
                 "958122e8b4b97fd4e71eca2d08ef754ed77c3ad9"),
    )
}

GROUPS: dict[str, tuple[str, ...]] = {
    "house": ("kaggle_house_train", "kaggle_house_test"),
    "fashion": ("fashion_train_images", "fashion_train_labels",
                "fashion_test_images", "fashion_test_labels"),
}


def resolve_names(name: str) -> list[str]:
    """The dataset names meant by ``name``: a group, one dataset, or ``all``."""
    if name == "all":
        return list(DATA_HUB)
    if name in GROUPS:
        return list(GROUPS[name])
    if name in DATA_HUB:
        return [name]
    valid = ", ".join(["all", *GROUPS, *DATA_HUB])
    raise UsageError(f"unknown dataset {name!r}; choose one of: {valid}")


def _entry(entry: str | DataFile) -> DataFile:
    if isinstance(entry, DataFile):
        return entry
    if entry not in DATA_HUB:
        raise UsageError(f"unknown dataset {entry!r}; choose one of: {', '.join(DATA_HUB)}")
    return DATA_HUB[entry]


def _sha1(stream) -> str:
    digest = hashlib.sha1()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha1_file(path: str | os.PathLike) -> str:
    """The SHA-1 of a file's bytes."""
    with open(path, "rb") as handle:
        return _sha1(handle)


def verify(entry: str | DataFile, path: str | os.PathLike) -> bool:
    """True if ``path`` is ``entry``'s file: its bytes match ``sha1`` or its gzip payload
    matches ``payload_sha1``. A file that is not valid gzip simply fails the payload check."""
    entry, path = _entry(entry), Path(path)
    if not path.is_file():
        return False
    if entry.sha1 is None and entry.payload_sha1 is None:
        return True
    if entry.sha1 is not None and sha1_file(path) == entry.sha1:
        return True
    if entry.payload_sha1 is not None:
        try:
            with gzip.open(path, "rb") as handle:
                return _sha1(handle) == entry.payload_sha1
        except (OSError, EOFError, zlib.error):
            return False
    return False


class _SourceFailed(Exception):
    """One source cannot serve the file; ``transient`` says whether asking again may help."""

    def __init__(self, reason: str, transient: bool = False):
        super().__init__(reason)
        self.transient = transient


# Substrings of requests/urllib3 messages -> the short reason shown in the one-line error.
_REASONS = (
    ("NameResolutionError", "unknown host"),
    ("Name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("Connection refused", "connection refused"),
    ("timed out", "timed out"),
    ("IncompleteRead", "body cut short"),
    ("Connection broken", "body cut short"),
)


def _reason(exc: Exception) -> str:
    text = str(exc)
    return next((short for needle, short in _REASONS if needle in text), type(exc).__name__)


def _sources(entry: DataFile, mirrors: Iterable[str | os.PathLike]) -> Iterator[Path | str]:
    """Each mirror's copy of ``entry.path``, then the canonical URL: a local Path or a URL."""
    for mirror in mirrors:
        base = str(mirror)
        if "://" in base:
            yield _location(base.rstrip("/") + "/" + entry.path)
        else:
            yield Path(base).expanduser() / entry.path
    yield _location(entry.url)


def _location(url: str) -> Path | str:
    parts = urlsplit(url)
    return Path(url2pathname(parts.path)) if parts.scheme == "file" else url


def _write(chunks: Iterable[bytes], tmp: Path, total: int | None, desc: str, progress: bool) -> int:
    """Stream ``chunks`` into ``tmp`` (truncating it, so a retry starts clean); bytes written."""
    written = 0
    with open(tmp, "wb") as out, tqdm(total=total, desc=desc, unit="B", unit_scale=True,
                                      unit_divisor=1024, disable=not progress, leave=False) as bar:
        for chunk in chunks:
            out.write(chunk)
            written += len(chunk)
            bar.update(len(chunk))
    return written


def _get(session: requests.Session, url: str, tmp: Path, desc: str, progress: bool,
         timeout) -> None:
    """One HTTP attempt; every failure becomes a _SourceFailed saying whether to retry."""
    try:
        with session.get(url, stream=True, timeout=timeout) as response:
            if response.status_code >= 400:
                raise _SourceFailed(f"HTTP {response.status_code}", response.status_code >= 500)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            written = _write(response.iter_content(CHUNK), tmp, total, desc, progress)
            # urllib3 2 raises on a short body itself, urllib3 1 lets it through silently.
            # With a Content-Encoding the decoded size legitimately differs.
            encoded = "Content-Encoding" in response.headers
            if total is not None and written != total and not encoded:
                raise _SourceFailed(f"body cut short ({written} of {total} bytes)", True)
    except (requests.ConnectionError, requests.Timeout,
            requests.exceptions.ChunkedEncodingError) as exc:
        raise _SourceFailed(_reason(exc), True) from None
    except requests.RequestException as exc:  # invalid URL, unsupported scheme, ...
        raise _SourceFailed(_reason(exc)) from None


def _fetch(location: Path | str, tmp: Path, desc: str, progress: bool,
           session: requests.Session, retries: int, backoff: float, timeout) -> None:
    """Copy a local file, or GET a URL retrying transient failures with exponential backoff."""
    if isinstance(location, Path):
        if not location.is_file():
            raise _SourceFailed("not found")
        with open(location, "rb") as src:
            _write(iter(lambda: src.read(CHUNK), b""), tmp, location.stat().st_size, desc, progress)
        return
    for attempt in range(retries + 1):
        try:
            return _get(session, location, tmp, desc, progress, timeout)
        except _SourceFailed as failure:
            if not failure.transient or attempt == retries:
                if attempt:
                    raise _SourceFailed(f"{failure} after {attempt + 1} attempts") from None
                raise
            delay = backoff * 2**attempt
            log.warning("%s: %s from %s; retrying in %.2gs", desc, failure, location, delay)
            time.sleep(delay)


def _remove_stale_parts(target: Path) -> None:
    """Delete temporary files that a killed earlier download of ``target`` left behind
    (``atomic_path`` names them ``.<name>.<random>.part``). The workspace lock keeps two
    pipeline processes from downloading into the same cache at once."""
    if target.parent.is_dir():
        for part in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
            part.unlink(missing_ok=True)


def download(entry: str | DataFile, cache_dir: str | os.PathLike,
             mirrors: Iterable[str | os.PathLike] = (), progress: bool | None = None,
             session: requests.Session | None = None, retries: int = 3, backoff: float = 0.5,
             timeout: float | tuple[float, float] = (10, 60)) -> Path:
    """Return ``cache_dir / entry.path`` holding ``entry``'s verified file, fetching it if needed.

    Sources are tried in order: each mirror (a folder, ``file://`` URL or http(s) base URL),
    then ``entry.url``. ``retries`` counts extra attempts per URL after transient failures,
    sleeping ``backoff * 2**attempt`` between them. ``progress=None`` shows a bar only on a
    terminal. Raises DownloadError, naming every source tried, when none serves good bytes.
    """
    entry = _entry(entry)
    target = Path(cache_dir) / entry.path
    if verify(entry, target):
        log.info("%s: cached at %s", entry.name, target)
        return target
    if target.exists():
        # Never keep a file that fails its hash, even if fetching it again fails below.
        log.warning("%s: cached %s fails its hash; fetching it again", entry.name, target)
        target.unlink()
    _remove_stale_parts(target)
    progress = sys.stderr.isatty() if progress is None else progress
    tried = []
    with requests.Session() as fallback:
        session = session or fallback
        for location in _sources(entry, mirrors):
            try:
                with atomic_path(target) as tmp:
                    _fetch(location, tmp, entry.name, progress, session, retries, backoff, timeout)
                    if not verify(entry, tmp):
                        raise _SourceFailed("wrong bytes: hash mismatch")
            except _SourceFailed as failure:
                tried.append(f"{location} ({' '.join(str(failure).split())})")
                continue
            log.info("%s: downloaded from %s", entry.name, location)
            return target
    raise DownloadError(
        f"cannot download {entry.name}: tried {'; '.join(tried)}; "
        f"set a mirror (mirrors: a folder or URL) or the {MIRROR_ENV} environment variable"
    )


def download_group(name: str, cache_dir: str | os.PathLike,
                   mirrors: Iterable[str | os.PathLike] = (), **kw) -> dict[str, Path]:
    """Download a group, one dataset or ``all``; one HTTP session serves every file."""
    mirrors = list(mirrors)
    names = resolve_names(name)
    with requests.Session() as session:
        kw["session"] = kw.get("session") or session
        return {each: download(each, cache_dir, mirrors, **kw) for each in names}


_ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")
# Python's own "data" filter re-checks each link against what is already on disk, catching
# chains of links (a -> ., b -> a/..) that the name checks in _check_member cannot see.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _check_member(archive: Path, name: str, link: str | None = None, hard: bool = False) -> None:
    """Refuse a member that would land, or link, outside the extraction folder."""
    def refuse(why: str):
        raise DataError(f"{archive}: refusing to extract member {name!r}: {why}")

    if PurePosixPath(name).is_absolute():
        refuse("absolute path")
    if ".." in PurePosixPath(name).parts:
        refuse("'..' in its path")
    if link is not None:
        # A symlink's target is relative to its own folder, a hardlink's to the archive root.
        joined = posixpath.normpath(link if hard else posixpath.join(posixpath.dirname(name), link))
        if posixpath.isabs(link) or joined == ".." or joined.startswith("../"):
            refuse(f"{'hardlink' if hard else 'symlink'} to {link!r} points outside the folder")


def extract_archive(archive: Path, dest: Path) -> None:
    """Check every member, extract into a temporary folder, then rename it to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:  # zipfile never creates links: names suffice
                for info in zf.infolist():
                    _check_member(archive, info.filename)
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    link = member.linkname if member.issym() or member.islnk() else None
                    _check_member(archive, member.name, link, member.islnk())
                tf.extractall(tmp, **_TAR_FILTER)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except (tarfile.TarError, zipfile.BadZipFile) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        member = getattr(getattr(exc, "tarinfo", None), "name", None)
        where = f"refusing to extract member {member!r}: " if member else "cannot extract: "
        raise DataError(f"{archive}: {where}{' '.join(str(exc).split())}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def download_extract(entry: str | DataFile, cache_dir: str | os.PathLike,
                     mirrors: Iterable[str | os.PathLike] = (),
                     folder: str | os.PathLike | None = None, **kw) -> Path:
    """Download ``entry`` and unpack it: an archive into a folder beside it (or ``folder``),
    a plain ``.gz`` into the same name without ``.gz``. Returns the folder or file."""
    archive = download(entry, cache_dir, mirrors, **kw)
    name = archive.name
    suffix = next((s for s in _ARCHIVES if name.endswith(s)), None)
    if suffix is not None:
        dest = Path(folder) if folder else archive.with_name(name[: -len(suffix)])
        extract_archive(archive, dest)
        return dest
    if name.endswith(".gz"):
        out = (Path(folder) if folder else archive.parent) / name[:-3]
        try:
            with gzip.open(archive, "rb") as src, atomic_path(out) as tmp, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DataError(f"{archive}: not a valid gzip file ({exc})") from None
        return out
    raise DataError(f"{archive}: cannot extract; expected .zip, .tar, .tar.gz, .tgz or .gz")


def status(cache_dir: str | os.PathLike) -> list[dict]:
    """One row per DATA_HUB entry: where it is cached and whether the cached file verifies."""
    rows = []
    for entry in DATA_HUB.values():
        path = Path(cache_dir) / entry.path
        rows.append({"name": entry.name, "url": entry.url, "path": str(path),
                     "cached": path.is_file(), "verified": verify(entry, path)})
    return rows
