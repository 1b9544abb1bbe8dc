"""Kaggle's official client (the optional ``[kaggle]`` extra), behind the three calls this
package makes: download a competition's files, submit a CSV, list the user's submissions.

This is the only module that imports ``kaggle``. The tests run the real client against a local
HTTP server that answers its few calls (tests/test_kaggle.py), because the client's return
values, not only its exceptions, say when a call failed: a failed upload comes back as a
response whose ``ref`` is 0. The client finds the user's credentials where it always does
(``~/.kaggle/kaggle.json``, ``$KAGGLE_USERNAME``/``$KAGGLE_KEY``, its token file); without
them, without the extra, or with a client that cannot import its own dependencies, a command
ends in one line saying what to install or set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import io
from pathlib import Path

from pipeline.errors import DownloadError, UsageError

INSTALL = "the Kaggle client is not installed: pip install -e \".[kaggle]\""
CREDENTIALS = ("no Kaggle credentials: save kaggle.json from kaggle.com (Settings, API) in ~/.kaggle, "
               "or set KAGGLE_USERNAME and KAGGLE_KEY")


def api():
    """An authenticated ``KaggleApi``. The client prints its own help on stdout and exits when
    it finds no credentials: both are caught here and become one line."""
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except ImportError as exc:
            raise UsageError(_unimportable(exc)) from None
        client = KaggleApi()
        try:
            client.authenticate()
        except SystemExit:
            raise UsageError(CREDENTIALS) from None
    return client


def _unimportable(exc: ImportError) -> str:
    """Installing the extra helps only when the client itself is missing; an installed client
    that fails on its own import (kaggle 2.2.5 imports six without declaring it) needs the
    module it names."""
    if importlib.util.find_spec("kaggle") is None:
        return INSTALL
    failed = f"the Kaggle client is installed but its import of {exc.name or 'a module'} failed ({_first_line(exc)})"
    return f"{failed}: pip install {exc.name.split('.')[0]}" if exc.name else failed


class Competition:
    """One competition on Kaggle, through ``client`` (by default the authenticated client)."""

    def __init__(self, slug: str, client=None):
        self.slug = slug
        self.client = client if client is not None else api()

    def _call(self, what: str, call, *args, **kwargs):
        # The client raises whatever its transport raises (HTTP errors, a competition whose rules
        # were not accepted, no network): at this boundary, any of them is one line naming the call.
        # What it prints (progress, warnings, an upload's error) would break that line: kept out.
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - see above
            raise DownloadError(f"Kaggle: {what} {self.slug} failed: {_first_line(exc)}") from None

    def download(self, folder: Path) -> Path:
        """The competition's zip of files, downloaded into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self._call("downloading", self.client.competition_download_files, self.slug, path=str(folder), quiet=True)
        path = folder / f"{self.slug}.zip"
        if not path.is_file():
            raise DownloadError(f"Kaggle: downloading {self.slug} left no {path.name} in {folder}")
        return path

    def submit(self, path: Path, message: str) -> int:
        """Upload ``path`` as a submission: its number on Kaggle. The client answers a failed
        upload or a refused submission with a response, not an exception: one without a number
        (``ref`` 0) and with Kaggle's words in ``message``."""
        by_hand = f"; the checked CSV is still in {path}: upload it at {self.url}/submit"
        try:
            response = self._call("submitting to", self.client.competition_submit, str(path), message, self.slug,
                                  quiet=True)
        except DownloadError as exc:
            raise DownloadError(f"{exc}{by_hand}") from None
        ref = getattr(response, "ref", 0)
        if not isinstance(ref, int) or ref <= 0:
            said = str(getattr(response, "message", "") or "").strip() or "no submission was made"
            raise DownloadError(f"Kaggle: submitting to {self.slug} failed: {said.splitlines()[0]}{by_hand}")
        return ref

    @property
    def url(self) -> str:
        return f"https://www.kaggle.com/competitions/{self.slug}"

    def submissions(self) -> list[dict]:
        """The user's submissions, newest first, as a person reads them: the date to the minute,
        the status in words (``complete``), the scores."""
        found = self._call("listing the submissions of", self.client.competition_submissions, self.slug)
        if not isinstance(found, list):
            raise DownloadError(f"Kaggle: listing the submissions of {self.slug} returned no list: {found!r}")
        return [{"date": _when(_field(s, "date")), "description": _field(s, "description"),
                 "status": _status(_field(s, "status")), "public": _field(s, "public_score"),
                 "private": _field(s, "private_score")} for s in found if s is not None]


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _field(submission, name: str):
    """A submission's field ("" when unset): the client's objects use snake_case names, older ones camelCase."""
    camel = name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:])
    value = getattr(submission, name, None)
    value = getattr(submission, camel, None) if value is None else value
    return "" if value is None else value


def _when(date) -> str:
    """The client's datetime (with microseconds) to the minute."""
    return date.strftime("%Y-%m-%d %H:%M") if isinstance(date, dt.datetime) else str(date)


def _status(status) -> str:
    """``SubmissionStatus.COMPLETE`` (the client's enum) or "COMPLETE" as ``complete``."""
    return str(getattr(status, "name", status)).lower()
