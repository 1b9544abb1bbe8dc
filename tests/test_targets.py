"""Targets declared in pipeline.toml, end to end through the CLI: a classification target, CSVs
by URL (verified by train_sha1/test_sha1), local files with a wrong SHA-1, and Kaggle-style
archives (issue 13, item 6): a local or served .zip / .tar.gz whose members are train and test."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest

from helpers import (TOML, assert_one_line_error, base_test_lines, base_train_lines, declare, files_under, make_zip,
                     run_cli, sha1, statuses, text, workspace)

TRAIN, TEST = text(base_train_lines()).encode(), text(base_test_lines()).encode()
SPEC = dict(id="Id", label="Price", task="regression", metric="log_rmse")
STAGES = ("download", "preprocess", "cv", "train", "submit")


def new_workspace(tmp_path, toml: str, params: str = ""):
    ws = tmp_path / "ws"
    ws.mkdir(parents=True)
    (ws / "pipeline.toml").write_text(toml)
    (ws / "params.toml").write_text(params)
    return ws


def assert_toy_submission(path, name: str = "Price"):
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["Id", name] and frame["Id"].tolist() == [13, 14, 15, 16]
    assert np.isfinite(frame[name]).all() and frame[name].gt(0).all()


# ----------------------------------------------------------------------------- classification


def test_classification_target_end_to_end(tmp_path, capsys):
    """Labels "yes"/"no", scored by accuracy: cv, train and a submission of known labels only."""
    rng = np.random.default_rng(0)
    n = 360
    frame = pd.DataFrame({"cid": np.arange(500, 500 + n), "tenure": rng.normal(0, 1, n),
                          "spend": rng.normal(0, 1, n), "plan": rng.choice(["basic", "pro"], n)})
    truth = np.where(frame["tenure"] - 0.5 * frame["spend"] + 0.8 * (frame["plan"] == "pro") > 0.4, "yes", "no")
    train, test = frame.iloc[:300].assign(churned=truth[:300]), frame.iloc[300:]
    ws = new_workspace(tmp_path, declare("churn", train="train.csv", test="test.csv", id="cid", label="churned",
                                         task="classification", metric="accuracy"),
                       "[churn]\nepochs = 30\nlr = 0.05\nbatch_size = 32\n")
    train.to_csv(ws / "train.csv", index=False)
    test.to_csv(ws / "test.csv", index=False)
    code, _, err = run_cli(ws, capsys, "run", "churn")
    assert code == 0, err
    assert all(f"{stage}: running" in err for stage in STAGES)

    [run] = (ws / "reports" / "runs").glob("churn-cv-*/report.json")
    report = json.loads(run.read_text())
    assert report["metric"] == "accuracy" and len(report["folds"]) == 5
    assert all(0 <= f["valid"] <= 1 for f in report["folds"]) and report["mean_valid"] > 0.8
    assert "log_target" not in report["params"]  # a classifier has no log target: not one of its params

    lines = (ws / "submissions" / "churn.csv").read_text().splitlines()
    assert lines[0] == "cid,churned"
    submission = pd.read_csv(ws / "submissions" / "churn.csv")
    assert submission["cid"].tolist() == test["cid"].tolist()
    assert set(submission["churned"]) == {"yes", "no"}
    assert (submission["churned"].to_numpy() == truth[300:]).mean() > 0.8
    assert set(statuses(ws, capsys, "churn").values()) == {"up to date"}


# ----------------------------------------------------------------------------- CSVs by URL, SHA-1s


def url_toml(server, train_sha1: str = sha1(TRAIN), test_sha1: str = sha1(TEST)) -> str:
    server.files.update({"comp/train.csv": TRAIN, "comp/test.csv": TEST})
    return declare("toy", train=server.url("comp/train.csv"), test=server.url("comp/test.csv"),
                   train_sha1=train_sha1, test_sha1=test_sha1, **SPEC)


def test_declared_target_by_url_is_downloaded_verified_and_cached(server, tmp_path, capsys):
    ws = new_workspace(tmp_path, url_toml(server), "[toy]\nepochs = 2\n")
    code, out, err = run_cli(ws, capsys, "download", "toy")
    assert code == 0, err
    assert out.split() == ["data/toy/train.csv", "data/toy/test.csv"]
    assert (ws / "data/toy/train.csv").read_bytes() == TRAIN and (ws / "data/toy/test.csv").read_bytes() == TEST
    assert dict(server.counts) == {"comp/train.csv": 1, "comp/test.csv": 1}
    code, _, err = run_cli(ws, capsys, "submit", "toy")
    assert code == 0, err
    assert "download: up to date, skipped" in err and sum(server.counts.values()) == 2
    assert_toy_submission(ws / "submissions" / "toy.csv")


@pytest.mark.parametrize("role", ["train", "test"])
def test_wrong_sha1_for_a_url_is_one_line_and_nothing_lands(server, tmp_path, capsys, role):
    hashes = {"train_sha1": sha1(TRAIN), "test_sha1": sha1(TEST), f"{role}_sha1": "0" * 40}
    ws = new_workspace(tmp_path, url_toml(server, **hashes))
    code, _, err = run_cli(ws, capsys, "download", "toy")
    assert code == 4  # a download that failed
    assert_one_line_error(code, err, f"cannot download toy_{role}",
                          f"{server.url(f'comp/{role}.csv')} (wrong bytes: hash mismatch)")
    verified = [ws / "data/toy/train.csv"] if role == "test" else []  # train is fetched first
    assert files_under(ws / "data") == verified
    assert server.counts[f"comp/{role}.csv"] == 1  # wrong bytes are not retried


def test_local_file_with_a_wrong_train_sha1_is_one_line(tmp_path, capsys):
    ws = workspace(tmp_path, toml=TOML + f'train_sha1 = "{"0" * 40}"\n')
    for command in (["download", "toy"], ["cv", "toy"]):
        code, _, err = run_cli(ws, capsys, *command)
        assert code == 1
        assert_one_line_error(code, err, "[target.toy]", f"{ws / 'train.csv'} does not match train_sha1 {'0' * 40}")
    assert not (ws / "data").exists()


def test_local_files_with_right_sha1s_are_used_in_place(tmp_path, capsys):
    ws = workspace(tmp_path, toml=TOML + f'train_sha1 = "{sha1(TRAIN)}"\ntest_sha1 = "{sha1(TEST)}"\n')
    code, out, err = run_cli(ws, capsys, "download", "toy")
    assert code == 0, err
    assert out.split() == ["train.csv", "test.csv"] and files_under(ws / "data") == []


# ----------------------------------------------------------------------------- archives


def comp_archive(kind: str = "zip", extra: dict[str, bytes] | None = None) -> bytes:
    """A Kaggle-style download: comp/train.csv, comp/test.csv and a README."""
    members = {"comp/train.csv": TRAIN, "comp/test.csv": TEST, "comp/README.txt": b"the toy competition\n",
               **(extra or {})}
    if kind == "zip":
        return make_zip(members)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def archive_toml(archive: str, train: str = "comp/train.csv", **extra) -> str:
    return declare("comp", archive=archive, train=train, test="comp/test.csv", **extra, **SPEC)


def test_local_zip_archive_runs_end_to_end(tmp_path, capsys):
    data = comp_archive()
    ws = new_workspace(tmp_path, archive_toml("downloads/comp.zip", archive_sha1=sha1(data)), "[comp]\nepochs = 2\n")
    (ws / "downloads").mkdir()
    (ws / "downloads" / "comp.zip").write_bytes(data)
    code, _, err = run_cli(ws, capsys, "run", "comp")
    assert code == 0, err
    folder = ws / "data" / "comp" / "archive" / "comp"
    assert (folder / "train.csv").read_bytes() == TRAIN and (folder / "test.csv").read_bytes() == TEST
    assert_toy_submission(ws / "submissions" / "comp.csv")
    lock = json.loads((ws / "pipeline.lock").read_text())
    assert sorted(lock["comp"]["download"]["outs"]) == ["data/comp/archive/comp/test.csv",
                                                         "data/comp/archive/comp/train.csv"]
    assert set(statuses(ws, capsys, "comp").values()) == {"up to date"}


@pytest.mark.parametrize("kind, name", [("zip", "comp.zip"), ("tar", "comp.tar.gz")])
def test_served_archive_runs_end_to_end_and_is_fetched_once(server, tmp_path, capsys, kind, name):
    data = comp_archive(kind)
    server.files[f"kaggle/{name}"] = data
    ws = new_workspace(tmp_path, archive_toml(server.url(f"kaggle/{name}"), archive_sha1=sha1(data)),
                       "[comp]\nepochs = 2\n")
    code, _, err = run_cli(ws, capsys, "run", "comp")
    assert code == 0, err
    assert (ws / "data" / "comp" / name).read_bytes() == data  # the verified download, kept as the cache
    assert (ws / "data" / "comp" / "archive" / "comp" / "train.csv").read_bytes() == TRAIN
    assert_toy_submission(ws / "submissions" / "comp.csv")
    code, _, err = run_cli(ws, capsys, "run", "comp")
    assert code == 0 and err.count("up to date, skipped") == len(STAGES)
    assert dict(server.counts) == {f"kaggle/{name}": 1}


def test_missing_archive_member_is_one_line(tmp_path, capsys):
    ws = new_workspace(tmp_path, archive_toml("comp.zip", train="comp/training.csv"))
    (ws / "comp.zip").write_bytes(comp_archive())
    code, _, err = run_cli(ws, capsys, "run", "comp")
    assert code == 1
    assert_one_line_error(code, err, f"archive {ws / 'comp.zip'} has no member 'comp/training.csv'",
                          "fix train/test/sample in [target.comp]")
    assert not (ws / "data" / "comp" / "features.pt").exists()


def test_archive_sha1_mismatch_is_one_line(server, tmp_path, capsys):
    data = comp_archive()
    ws = new_workspace(tmp_path, archive_toml("comp.zip", archive_sha1="0" * 40))
    (ws / "comp.zip").write_bytes(data)
    code, _, err = run_cli(ws, capsys, "run", "comp")
    assert code == 1
    assert_one_line_error(code, err, "[target.comp]", f"{ws / 'comp.zip'} does not match archive_sha1 {'0' * 40}")
    assert not (ws / "data").exists()

    server.files["comp.zip"] = data
    (ws / "pipeline.toml").write_text(archive_toml(server.url("comp.zip"), archive_sha1="0" * 40))
    code, _, err = run_cli(ws, capsys, "run", "comp")
    assert code == 4
    assert_one_line_error(code, err, "cannot download comp_archive",
                          f"{server.url('comp.zip')} (wrong bytes: hash mismatch)")
    assert files_under(ws / "data") == []


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_archive_with_a_hostile_member_is_refused(tmp_path, capsys, kind):
    name = "comp.zip" if kind == "zip" else "comp.tar.gz"
    ws = new_workspace(tmp_path, archive_toml(name))
    (ws / name).write_bytes(comp_archive(kind, {"../evil.csv": b"Id,Price\n1,2\n"}))
    code, _, err = run_cli(ws, capsys, "run", "comp")
    assert code == 1
    assert_one_line_error(code, err, str(ws / name), "refusing to extract member '../evil.csv'")
    assert not list(tmp_path.rglob("evil.csv"))
    assert files_under(ws / "data") == [] and not (ws / "data" / "comp" / "archive").exists()
