"""Kaggle's official client (issues 26 and 29): `kaggle = "slug"` downloads a competition's files
once, `submit --to-kaggle` uploads the checked CSV, `leaderboard` lists the user's submissions.

The real client runs, against a local HTTP server that answers the few calls it makes (read in
kagglesdk's competition_api_service.py and kaggle's kaggle_api_extended.py) and records what it
received. The client is routed there as kaggle 2.2.5 allows: ``KAGGLE_API_ENVIRONMENT=LOCALHOST``
makes it call ``http://localhost/api/v1/...`` (kagglesdk's kaggle_env.py), and ``http_proxy``
sends those requests, and the upload's PUT, to the server's port. Its credentials come from
``KAGGLE_USERNAME``/``KAGGLE_KEY`` under a temporary HOME, so no real config is read. Without the
client these tests skip, except under CI=true, which installs the extra.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pytest

from helpers import Handler, Server, assert_one_line_error, make_competition, make_zip, run_cli, serving, statuses

SLUG = "playground-series-s9e9"
USER, KEY = "ada", "0123456789abcdef"
SERVICE = "/api/v1/competitions.CompetitionApiService/"


class Kaggle(Server):
    """Kaggle's API as the client calls it: ``calls`` records each call's name, headers and body
    (JSON, or the uploaded bytes); ``answers[call] = (status, body)`` replaces a call's answer
    ("upload" is the PUT of the CSV)."""

    TOKEN = "blob-token-1"
    REF = 4242

    def __init__(self, port: int):
        super().__init__(port)
        self.calls: list[tuple[str, dict, object]] = []
        self.answers: dict[str, tuple[int, object]] = {}

    def called(self, name: str) -> list:
        return [body for call, _, body in self.calls if call == name]

    def answer(self, call: str) -> tuple[int, object]:
        if call in self.answers:
            return self.answers[call]
        return {  # what kaggle.com answers, in the fields kagglesdk reads
            "DownloadDataFiles": (302, self.url(f"files/{SLUG}.zip?X-Goog-Signature=0a1b")),
            "StartSubmissionUpload": (200, {"token": self.TOKEN, "createUrl": self.url(f"upload/{self.TOKEN}")}),
            "CreateSubmission": (200, {"message": "Successfully submitted to Playground Series", "ref": self.REF}),
            "ListSubmissions": (200, {"submissions": [
                {"ref": self.REF, "date": "2026-12-04T19:04:31.123456Z", "description": "first try",
                 "status": "COMPLETE", "publicScore": "0.81234", "fileName": "pg.csv"}]}),
            "upload": (200, None),
        }.get(call, (404, {"code": 404, "message": f"no call {call}"}))


class KaggleHandler(Handler):
    """The API's calls (POST) and the upload (PUT); the zip's GET is the test server's own."""

    def do_POST(self):
        call = urlsplit(self.path).path.removeprefix(SERVICE)
        self._record(call, json.loads(self._body() or b"{}"))

    def do_PUT(self):
        self._record("upload", self._body())

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _record(self, call: str, body) -> None:
        state: Kaggle = self.server.state
        state.calls.append((call, dict(self.headers), body))
        status, answer = state.answer(call)
        self.send_response(status)
        if status == 302:
            self.send_header("Location", answer)
            answer = None
        data = b"" if answer is None else json.dumps(answer).encode()
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def client(tmp_path, monkeypatch):
    """The real client's KaggleApi, set to call http://localhost with the test's credentials."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI installs the [kaggle] extra, whose client fails to import: {exc}")
        pytest.skip(f"the Kaggle client is not importable ({exc}): pip install -e \".[kaggle]\"")
    # The client reads these once, when first imported (perhaps before this test set the environment).
    monkeypatch.setattr(KaggleApi, "args", ["--local"])
    monkeypatch.setattr(KaggleApi, "config_dir", str(home / ".kaggle"))
    monkeypatch.setattr(KaggleApi, "config", str(home / ".kaggle" / "kaggle.json"))
    return KaggleApi


@pytest.fixture
def kaggle(client, monkeypatch):
    """The local Kaggle, reached by the real client through ``http_proxy``, with credentials."""
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with serving(KaggleHandler, Kaggle) as service:
        monkeypatch.setenv("http_proxy", service.url())
        yield service


@pytest.fixture
def competition(tmp_path, kaggle):
    """A workspace whose target ``pg`` is Kaggle's SLUG, and the zip the server holds for it."""
    r = np.random.default_rng(0)
    x = r.normal(size=(260, 2))
    frame = pd.DataFrame({"id": range(260), "a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] > 0).astype(int)})
    kaggle.files[f"files/{SLUG}.zip"] = make_zip({
        "train.csv": frame.iloc[:200].to_csv(index=False).encode(),
        "test.csv": frame.iloc[200:, :3].to_csv(index=False).encode(),
        "sample_submission.csv": pd.DataFrame({"id": frame["id"].iloc[200:], "y": 0.5}).to_csv(index=False).encode()})
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pipeline.toml").write_text(
        f'[target.pg]\nkaggle = "{SLUG}"\ntrain = "train.csv"\ntest = "test.csv"\nsample = "sample_submission.csv"\n'
        'id = "id"\nlabel = "y"\ntask = "classification"\nmetric = "auc"\npositive = 1\n')
    return ws, kaggle


def test_the_competitions_files_come_once_from_the_client_and_are_recorded(competition, capsys):
    ws, kaggle = competition
    assert run_cli(ws, capsys, "download", "pg")[0] == 0
    assert run_cli(ws, capsys, "download", "pg")[0] == 0  # cached: Kaggle is not asked again
    assert kaggle.called("DownloadDataFiles") == [{"competitionName": SLUG}]
    [(_, headers, _)] = kaggle.calls
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"{USER}:{KEY}".encode()).decode()
    assert kaggle.counts[f"files/{SLUG}.zip"] == 1  # the redirect was followed
    assert (ws / "data" / "pg" / f"{SLUG}.zip").read_bytes() == kaggle.files[f"files/{SLUG}.zip"]
    lock = (ws / "pipeline.lock").read_text()
    assert f"data/pg/{SLUG}.zip" in lock and "data/pg/archive/train.csv" in lock
    (ws / "data" / "pg" / "archive" / "train.csv").write_text("id,a,b,y\n1,2,3,1\n")  # tampered
    assert statuses(ws, capsys, "pg")["download"].startswith("stale")  # its recorded SHA-1 no longer matches


def test_submit_to_kaggle_uploads_the_checked_csv_and_the_leaderboard_shows_it(competition, capsys):
    ws, kaggle = competition
    code, out, err = run_cli(ws, capsys, "submit", "pg", "--model", "lightgbm", "--to-kaggle", "-m", "first try")
    assert code == 0, err
    csv = ws / "submissions" / "pg.csv"
    [started] = kaggle.called("StartSubmissionUpload")
    assert (started["competitionName"], started["fileName"]) == (SLUG, "pg.csv")
    assert kaggle.called("upload") == [csv.read_bytes()] and started["contentLength"] == csv.stat().st_size
    assert kaggle.called("CreateSubmission") == [{"competitionName": SLUG, "blobFileTokens": Kaggle.TOKEN,
                                                  "submissionDescription": "first try"}]
    assert f"submitted to {SLUG} (submission {Kaggle.REF})" in out
    code, out, _ = run_cli(ws, capsys, "leaderboard", "pg")
    assert code == 0 and out.splitlines()[1].split() == ["2026-12-04", "19:04", "first", "try", "complete", "0.81234"]
    assert kaggle.called("ListSubmissions")[0]["competitionName"] == SLUG


@pytest.mark.parametrize("answer, said", [
    (("upload", (500, None)), "Could not submit to competition"),  # the client returns this, it does not raise
    (("CreateSubmission", (400, {"code": 400, "message": "Your team has used its 5 submissions today"})),
     "Your team has used its 5 submissions today"),
    (("CreateSubmission", (200, {"message": "Submission refused: wrong number of rows", "ref": 0})),
     "Submission refused: wrong number of rows"),
], ids=["upload-500", "refused-400", "refused-ref-0"])
def test_a_failed_upload_or_refused_submission_is_one_line_and_the_csv_stays(competition, capsys, answer, said):
    ws, kaggle = competition
    kaggle.answers[answer[0]] = answer[1]
    code, out, err = run_cli(ws, capsys, "submit", "pg", "--model", "lightgbm", "--to-kaggle", "-m", "first try")
    csv = ws / "submissions" / "pg.csv"
    assert_one_line_error(code, err, f"Kaggle: submitting to {SLUG} failed: {said}", f"checked CSV is still in {csv}")
    assert "submitted" not in out and csv.is_file() and kaggle.called("upload") == [csv.read_bytes()]
    if answer[0] == "upload":
        assert kaggle.called("CreateSubmission") == []


@pytest.mark.parametrize("command", [["submit", "toy", "--to-kaggle", "-m", "x"], ["download", "toy"]])
@pytest.mark.parametrize("missing", ["extra", "credentials"])
def test_without_the_extra_or_credentials_a_command_is_one_line_before_any_work(tmp_path, capsys, monkeypatch,
                                                                                 request, missing, command):
    if missing == "extra":  # as if not installed: neither the package nor the module can be imported
        for name in ("kaggle", "kaggle.api.kaggle_api_extended"):
            monkeypatch.setitem(sys.modules, name, None)
    else:  # the real client, which prints its help on stdout and exits when it finds no credentials
        request.getfixturevalue("client")
    ws = make_competition(tmp_path / "ws")
    with open(ws / "pipeline.toml", "a") as config:
        config.write(f'kaggle = "{SLUG}"\n')
    code, out, err = run_cli(ws, capsys, *command)
    needle = 'the Kaggle client is not installed: pip install -e ".[kaggle]"' if missing == "extra" else \
        "no Kaggle credentials: save kaggle.json"
    line = assert_one_line_error(code, err, needle)
    assert err.strip() == line and out == ""  # nothing ran first: no "download: running"
    assert not (ws / "models").exists() and not (ws / "data").exists()


def test_a_client_that_cannot_import_what_it_needs_names_it(tmp_path, capsys, monkeypatch, client):
    for name in [n for n in sys.modules if n == "kaggle" or n.startswith("kaggle.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "six", None)  # kaggle 2.2.5 imports six without declaring it
    ws = make_competition(tmp_path / "ws")
    with open(ws / "pipeline.toml", "a") as config:
        config.write(f'kaggle = "{SLUG}"\n')
    code, _, err = run_cli(ws, capsys, "download", "toy")
    line = assert_one_line_error(code, err, "the Kaggle client is installed but its import of six failed",
                                 "pip install six")
    assert err.strip() == line


def test_a_target_without_a_slug_and_a_failing_service_are_one_line(competition, capsys):
    ws, kaggle = competition
    make_competition(ws / "other")
    code, _, err = run_cli(ws / "other", capsys, "leaderboard", "toy")
    assert_one_line_error(code, err, "target toy is not a Kaggle competition: set kaggle = \"SLUG\"")
    kaggle.answers["DownloadDataFiles"] = (403, {"code": 403, "message": "You must accept this competition's rules"})
    code, _, err = run_cli(ws, capsys, "download", "pg")
    assert_one_line_error(code, err, f"Kaggle: downloading {SLUG} failed: You must accept this competition's rules")
    assert code == 4
