"""Kaggle's official client (issue 26), tested up to its boundary: `kaggle = "slug"` downloads a
competition's files once, `submit --to-kaggle` uploads the checked CSV, `leaderboard` lists the
user's submissions. The service cannot be reached from the test machines: a stand-in for the
client's KaggleApi object answers, and the real client is only imported in
pipeline/kaggle_client.py. Without the extra or credentials, each command is one line."""

from __future__ import annotations

import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import assert_one_line_error, make_competition, run_cli, statuses
from pipeline import kaggle_client

SLUG = "playground-series-s9e9"


class StandIn:
    """What this package calls of KaggleApi, recorded; the competition's zip built from ``files``."""

    def __init__(self, files: dict[str, pd.DataFrame]):
        self.files, self.calls = files, []

    def authenticate(self):
        self.calls.append("authenticate")

    def competition_download_files(self, competition, path=None, quiet=True):
        self.calls.append(("download", competition))
        with zipfile.ZipFile(Path(path) / f"{competition}.zip", "w") as archive:
            for name, frame in self.files.items():
                archive.writestr(name, frame.to_csv(index=False))

    def competition_submit(self, file_name, message, competition, quiet=False):
        self.calls.append(("submit", competition, message, pd.read_csv(file_name)))

    def competition_submissions(self, competition):
        return [types.SimpleNamespace(date="2026-12-03 07:00", description="first", status="COMPLETE",
                                      public_score="0.81234", private_score="")]


@pytest.fixture
def competition(tmp_path, monkeypatch):
    r = np.random.default_rng(0)
    x = r.normal(size=(260, 2))
    frame = pd.DataFrame({"id": range(260), "a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] > 0).astype(int)})
    stand_in = StandIn({"train.csv": frame.iloc[:200], "test.csv": frame.iloc[200:, :3],
                        "sample_submission.csv": pd.DataFrame({"id": frame["id"].iloc[200:], "y": 0.5})})
    monkeypatch.setattr(kaggle_client, "api", lambda: stand_in)
    (tmp_path / "pipeline.toml").write_text(
        f'[target.pg]\nkaggle = "{SLUG}"\ntrain = "train.csv"\ntest = "test.csv"\nsample = "sample_submission.csv"\n'
        'id = "id"\nlabel = "y"\ntask = "classification"\nmetric = "auc"\npositive = 1\n')
    return tmp_path, stand_in


def test_the_competitions_files_come_once_from_the_client_and_are_recorded(competition, capsys):
    ws, stand_in = competition
    assert run_cli(ws, capsys, "download", "pg")[0] == 0
    assert run_cli(ws, capsys, "download", "pg")[0] == 0  # cached: the client is not asked again
    assert stand_in.calls == [("download", SLUG)]
    lock = (ws / "pipeline.lock").read_text()
    assert f"data/pg/{SLUG}.zip" in lock and "data/pg/archive/train.csv" in lock
    (ws / "data" / "pg" / "archive" / "train.csv").write_text("id,a,b,y\n1,2,3,1\n")  # tampered
    assert statuses(ws, capsys, "pg")["download"].startswith("stale")  # its recorded SHA-1 no longer matches


def test_submit_to_kaggle_uploads_the_checked_csv_and_the_leaderboard_shows_it(competition, capsys):
    ws, stand_in = competition
    code, out, err = run_cli(ws, capsys, "submit", "pg", "--model", "lightgbm", "--to-kaggle", "-m", "first try")
    assert code == 0, err
    [(_, slug, message, uploaded)] = [c for c in stand_in.calls if c[0] == "submit"]
    assert (slug, message) == (SLUG, "first try")
    pd.testing.assert_frame_equal(uploaded, pd.read_csv(ws / "submissions" / "pg.csv"))
    assert f"submitted to {SLUG}" in out
    code, out, _ = run_cli(ws, capsys, "leaderboard", "pg")
    assert code == 0 and out.split("\n")[1].split()[-3:] == ["first", "COMPLETE", "0.81234"]


@pytest.mark.parametrize("missing", ["extra", "credentials"])
def test_without_the_extra_or_credentials_submit_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, missing):
    ws = make_competition(tmp_path / "ws")
    with open(ws / "pipeline.toml", "a") as config:
        config.write(f'kaggle = "{SLUG}"\n')
    if missing == "extra":
        monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", None)
    else:  # the real client prints its help on stdout and exits when it finds no credentials
        module = types.ModuleType("kaggle.api.kaggle_api_extended")

        class KaggleApi:
            def authenticate(self):
                print("Please sign in: see https://github.com/Kaggle/kaggle-api")
                sys.exit(1)

        module.KaggleApi = KaggleApi
        for name in ("kaggle", "kaggle.api"):
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    code, out, err = run_cli(ws, capsys, "submit", "toy", "--to-kaggle", "-m", "x")
    needle = 'pip install -e ".[kaggle]"' if missing == "extra" else "no Kaggle credentials: save kaggle.json"
    assert_one_line_error(code, err, needle)
    assert out == "" and not (ws / "models").exists()


def test_a_target_without_a_slug_and_a_failing_service_are_one_line(competition, capsys, monkeypatch):
    ws, stand_in = competition
    make_competition(ws / "other")
    code, _, err = run_cli(ws / "other", capsys, "leaderboard", "toy")
    assert_one_line_error(code, err, "target toy is not a Kaggle competition: set kaggle = \"SLUG\"")

    def refused(*args, **kwargs):
        raise RuntimeError("403 Client Error: Forbidden\nYou must accept this competition's rules")

    monkeypatch.setattr(stand_in, "competition_download_files", refused)
    code, _, err = run_cli(ws, capsys, "download", "pg")
    assert_one_line_error(code, err, f"Kaggle: downloading {SLUG} failed: 403 Client Error: Forbidden")
    assert code == 4
