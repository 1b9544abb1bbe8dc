"""The workspace: where data, models, submissions and reports live, and how files land there.

Every output goes through :func:`atomic_path` (write a temporary file beside the target, fsync,
then rename), so a process killed midway never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pipeline.errors import LockedError

HOME_ENV = "PIPELINE_HOME"
MIRROR_ENV = "PIPELINE_MIRROR"


@dataclass(frozen=True)
class Workspace:
    """Folders under one root: ``data/``, ``models/``, ``submissions/``, ``reports/``."""

    root: Path

    @classmethod
    def resolve(cls, workdir: str | os.PathLike | None = None) -> "Workspace":
        """``workdir``, else ``$PIPELINE_HOME``, else the current directory."""
        chosen = workdir or os.environ.get(HOME_ENV) or os.getcwd()
        return cls(Path(chosen).expanduser().resolve())

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def submissions(self) -> Path:
        return self.root / "submissions"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def lock_file(self) -> Path:
        """Human-readable stage state (see :mod:`pipeline.make`)."""
        return self.root / "pipeline.lock"

    @property
    def params_file(self) -> Path:
        return self.root / "params.toml"

    @property
    def config_file(self) -> Path:
        """Declared extra targets (see :mod:`pipeline.targets`)."""
        return self.root / "pipeline.toml"

    @contextlib.contextmanager
    def exclusive(self, wait: float = 0.0) -> Iterator[None]:
        """Hold the workspace's process lock; refuse after ``wait`` seconds if another holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".pipeline.run.lock"
        with open(path, "a+") as handle:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        handle.seek(0)
                        holder = handle.read().strip() or "another process"
                        raise LockedError(
                            f"{self.root} is busy: pipeline run by {holder} holds {path.name}; "
                            "wait for it to finish (or give wait, in seconds)"
                        ) from None
                    time.sleep(0.2)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")  # "http", before "://"
_HOST = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/:]+")  # "http://127.0.0.1", before ":8000/"
_PORT = re.compile(r"\d+(/|$)")


def mirrors_from_env() -> list[str]:
    """Mirrors listed in ``$PIPELINE_MIRROR``: folders and URLs separated by ``:`` (``;`` on
    Windows). A URL keeps its own colons: ``http://127.0.0.1:8000/:../shared/datasets`` is two."""
    value = os.environ.get(MIRROR_ENV, "")
    if os.pathsep != ":":
        return [part for part in value.split(os.pathsep) if part]
    mirrors: list[str] = []
    for part in value.split(":"):
        if mirrors and (part.startswith("//") and _SCHEME.fullmatch(mirrors[-1])
                        or _PORT.match(part) and _HOST.fullmatch(mirrors[-1])):
            mirrors[-1] += ":" + part
        else:
            mirrors.append(part)
    return [m for m in mirrors if m]


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it and rename it over ``target``.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``target``
    keeps its previous content, if any.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from others; open() obeys the umask
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: set it back at once
    os.umask(mask)
    return mask


def write_text(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json(target: str | os.PathLike, obj) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=False) + "\n")
