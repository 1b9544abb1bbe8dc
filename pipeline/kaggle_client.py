"""Kaggle's official client (the optional ``[kaggle]`` extra), behind the three calls this
package makes: download a competition's files, submit a CSV, list the user's submissions.

This is the only module that imports ``kaggle``; everything up to it is tested with a stand-in
for the client's ``KaggleApi`` object (the live service cannot be reached from the test
machines). The client finds the user's credentials where it always does (``~/.kaggle/kaggle.json``,
``$KAGGLE_USERNAME``/``$KAGGLE_KEY``, its token file); without them, or without the extra, a
command ends in one line saying what to install or set.
"""

from __future__ import annotations

import contextlib
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
        except ImportError:
            raise UsageError(INSTALL) from None
        client = KaggleApi()
        try:
            client.authenticate()
        except SystemExit:
            raise UsageError(CREDENTIALS) from None
    return client


class Competition:
    """One competition on Kaggle, through ``client`` (by default the authenticated client)."""

    def __init__(self, slug: str, client=None):
        self.slug = slug
        self.client = client if client is not None else api()

    def _call(self, what: str, call, *args, **kwargs):
        # The client raises whatever its transport raises (HTTP errors, a competition whose rules
        # were not accepted, no network): at this boundary, any of them is one line naming the call.
        try:
            return call(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - see above
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DownloadError(f"Kaggle: {what} {self.slug} failed: {reason}") from None

    def download(self, folder: Path) -> Path:
        """The competition's zip of files, downloaded into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self._call("downloading", self.client.competition_download_files, self.slug, path=str(folder), quiet=True)
        path = folder / f"{self.slug}.zip"
        if not path.is_file():
            raise DownloadError(f"Kaggle: downloading {self.slug} left no {path.name} in {folder}")
        return path

    def submit(self, path: Path, message: str) -> None:
        self._call("submitting to", self.client.competition_submit, str(path), message, self.slug, quiet=True)

    def submissions(self) -> list[dict]:
        """The user's submissions, newest first: date, description, status and scores."""
        found = self._call("listing the submissions of", self.client.competition_submissions, self.slug) or []
        return [{"date": str(_field(s, "date")), "description": _field(s, "description"),
                 "status": str(_field(s, "status")), "public": _field(s, "public_score"),
                 "private": _field(s, "private_score")} for s in found if s is not None]


def _field(submission, name: str):
    """A submission's field: the client's objects use snake_case names, older ones camelCase."""
    camel = name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:])
    value = getattr(submission, name, None)
    return getattr(submission, camel, "") if value is None else value
