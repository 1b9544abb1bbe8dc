"""Issue "Robustness": every bad input ends in a one-line error (never a traceback), both from
``load_tables`` and from the ``pipeline`` command over a target declared in ``pipeline.toml``.

Most CLI checks call :func:`pipeline.cli.main` in-process (same code path, exit code and stderr
as the console script, without seconds of imports each);
``test_cli_subprocess_prints_one_line_without_traceback`` runs the real command to prove that
no traceback reaches a terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TOML, assert_one_line_error, base_test_lines, base_train_lines, run_cli, text, trust_model, \
    workspace
from pipeline.cli import main
from pipeline.errors import DataError

from pipeline.metrics import METRICS
from pipeline.tabular.features import FeatureParams, build_features
from pipeline.tabular.model import FORMAT as MODEL_FORMAT, TrainedModel
from pipeline.tabular.tables import TableSpec, load_tables

FORMAT = MODEL_FORMAT  # the "format" key of a tabular checkpoint


def load_model(path: Path, metric, device):
    return TrainedModel.load(path, metric, device, "pipeline train toy")
SPEC = TableSpec(id="Id", label="Price", task="regression", metric="log_rmse")
CV = ["cv", "toy", "--epochs", "2"]


def assert_data_error(ws: Path, *needles: str) -> str:
    with pytest.raises(DataError) as caught:
        load_tables(ws / "train.csv", ws / "test.csv", SPEC)
    message = str(caught.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def both_refuse(tmp_path, capsys, needles: tuple[str, ...], **files) -> None:
    """The same one-line DataError from load_tables and from `pipeline cv` on the declared target."""
    ws = workspace(tmp_path, **files)
    message = assert_data_error(ws, *needles)
    code, _, err = run_cli(ws, capsys, *CV)
    line = assert_one_line_error(code, err, *needles)
    assert code == 1 and line == f"pipeline: error: {message}"
    assert not (ws / "data" / "toy" / "features.pt").exists()


# ----------------------------------------------------------------------------- bad CSVs, one test per item


def test_empty_file(tmp_path, capsys):
    both_refuse(tmp_path, capsys, ("train.csv", "is empty"), train="")


def test_header_only(tmp_path, capsys):
    both_refuse(tmp_path, capsys, ("test.csv", "has a header but no data rows"), test="Id,Area,Kind\n")


def test_blank_lines_only(tmp_path, capsys):
    both_refuse(tmp_path, capsys, ("train.csv", "no columns"), train="\n\n\n")


def test_missing_id_column(tmp_path, capsys):
    lines = [",".join(line.split(",")[1:]) for line in base_test_lines()]
    both_refuse(tmp_path, capsys, ("test.csv", "no id column 'Id'", "Area, Kind"), test=text(lines))


def test_missing_label_column(tmp_path, capsys):
    lines = [line.rsplit(",", 1)[0] for line in base_train_lines()]
    both_refuse(tmp_path, capsys, ("train.csv", "no label column 'Price'"), train=text(lines))


def test_text_in_label_column(tmp_path, capsys):
    lines = base_train_lines()
    lines[3] = "3,61,b,cheap"
    both_refuse(tmp_path, capsys, ("train.csv", "label 'Price'", "non-numeric 'cheap'", "line 4"), train=text(lines))


def test_nan_label(tmp_path, capsys):
    lines = base_train_lines()
    lines[5] = "5,48,b,"
    both_refuse(tmp_path, capsys, ("train.csv", "label 'Price' is missing at line 6"), train=text(lines))


def test_infinite_label(tmp_path, capsys):
    lines = base_train_lines()
    lines[7] = "7,49,b,inf"
    both_refuse(tmp_path, capsys, ("train.csv", "label 'Price' is infinite at line 8"), train=text(lines))


def test_non_positive_label_under_log_rmse(tmp_path, capsys):
    lines = base_train_lines()
    lines[2] = "2,54,a,0"
    both_refuse(tmp_path, capsys, ("train.csv", "label 'Price' is 0 at line 3", "log_rmse needs positive labels"),
                train=text(lines))


def test_non_positive_label_is_fine_under_rmse(tmp_path):
    lines = base_train_lines()
    lines[2] = "2,54,a,-5"
    ws = workspace(tmp_path, train=text(lines))
    tables = load_tables(ws / "train.csv", ws / "test.csv", TableSpec("Id", "Price", "regression", "rmse"))
    assert tables.labels.iloc[1] == -5


def test_duplicate_ids(tmp_path, capsys):
    lines = base_train_lines()
    lines[4] = "3" + lines[4][1:]
    both_refuse(tmp_path, capsys, ("train.csv", "duplicate Id 3 at lines 4, 5"), train=text(lines))


def test_bytes_that_are_not_utf8(tmp_path, capsys):
    data = text(base_test_lines()).encode("utf-8")
    assert data.count(b"\n15,40,b") == 1
    data = data.replace(b"\n15,40,b", b"\n15,40,caf\xe9")  # Latin-1 "café"
    offset = data.index(b"\xe9")
    both_refuse(tmp_path, capsys, ("test.csv", "not UTF-8", f"byte 0xe9 at offset {offset}, line 4"), test=data)


def test_row_with_an_extra_field(tmp_path, capsys):
    """pandas would silently take the first column as the index and shift every column left."""
    lines = base_test_lines()
    lines[1] = lines[1] + ",surplus"
    both_refuse(tmp_path, capsys, ("test.csv", "line 2 has more fields than the header"), test=text(lines))


def test_utf8_bom_is_accepted(tmp_path):
    ws = workspace(tmp_path, train=b"\xef\xbb\xbf" + text(base_train_lines()).encode())
    assert list(load_tables(ws / "train.csv", ws / "test.csv", SPEC).train.columns) == ["Area", "Kind"]


# ----------------------------------------------------------------------------- documented handlings


def test_column_entirely_nan_is_dropped(tmp_path, caplog, capsys):
    train = text([line + ("," if i else ",Empty") for i, line in enumerate(base_train_lines())])
    test = text([line + ("," if i else ",Empty") for i, line in enumerate(base_test_lines())])
    ws = workspace(tmp_path, train=train, test=test)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        tables = load_tables(ws / "train.csv", ws / "test.csv", SPEC)
    assert "dropping Empty: no values in train.csv" in caplog.text
    assert list(tables.train.columns) == list(tables.test.columns) == ["Area", "Kind"]
    assert build_features(tables).names == ["Area", "Kind_a", "Kind_b", "Kind_<missing>"]
    caplog.clear()
    code, out, _ = run_cli(ws, capsys, "preprocess", "toy", "--numeric-bins", "0", "--json")
    assert code == 0 and '"features": 4' in out
    assert "dropping Empty" in caplog.text


def test_column_only_in_test_is_dropped(tmp_path, caplog):
    test = text([line + (",1" if i else ",Extra") for i, line in enumerate(base_test_lines())])
    ws = workspace(tmp_path, test=test)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        tables = load_tables(ws / "train.csv", ws / "test.csv", SPEC)
    assert "test.csv: dropping Extra (absent from train.csv)" in caplog.text
    assert list(tables.test.columns) == ["Area", "Kind"]
    features = build_features(tables)
    assert features.X.shape[1] == features.X_test.shape[1] == 4


def test_column_only_in_train_is_dropped(tmp_path, caplog):
    ws = workspace(tmp_path, test=text([",".join(line.split(",")[:2]) for line in base_test_lines()]))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        tables = load_tables(ws / "train.csv", ws / "test.csv", SPEC)
    assert "train.csv: dropping Kind (absent from test.csv)" in caplog.text
    assert list(tables.train.columns) == ["Area"]
    assert build_features(tables).names == ["Area"]


# ----------------------------------------------------------------------------- bad pipeline.toml


@pytest.mark.parametrize("toml, needles", [
    (TOML.replace('train = "train.csv"', 'train = "nope.csv"'),
     ("[target.toy]", "train file", "nope.csv", "does not exist")),
    (TOML.replace('label = "Price"\n', ""), ("[target.toy]", "missing key 'label'")),
    (TOML.replace('"log_rmse"', '"accuracy"'), ("[target.toy]", "metric 'accuracy' does not fit task 'regression'")),
    (TOML + 'lable = "Price"\n', ("[target.toy]", "unknown key 'lable'")),
    (TOML.replace('task = "regression"', 'task = regression'), ("pipeline.toml", "not valid TOML")),
    (TOML.replace("[target.toy]", "[target.house]"), ("'house' is a built-in target",)),
], ids=["missing-file", "missing-key", "metric-vs-task", "unknown-key", "bad-syntax", "builtin-name"])
def test_bad_declaration(tmp_path, capsys, toml, needles):
    ws = workspace(tmp_path, toml=toml)
    code, _, err = run_cli(ws, capsys, *CV)
    assert_one_line_error(code, err, *needles)


def test_unknown_target_is_a_usage_error(tmp_path, capsys):
    code, _, err = run_cli(workspace(tmp_path), capsys, "cv", "toys")
    assert code == 2
    assert_one_line_error(code, err, "unknown target 'toys'", "toy")


# ----------------------------------------------------------------------------- training divergence (item 5)


def test_cv_reports_diverged_folds_and_exits_3(tmp_path, capsys, caplog):
    ws = workspace(tmp_path)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        code, out, err = run_cli(ws, capsys, "cv", "toy", "--lr", "1e30", "--epochs", "3")
    assert code == 3
    assert "Traceback" not in err
    notes = re.findall(r"diverged at epoch (\d+)", out)
    assert len(notes) == 5 and all(1 <= int(e) <= 3 for e in notes), out
    assert "mean valid failed" in out
    assert re.search(r"training diverged \(non-finite loss\): fold 1 at epoch \d", caplog.text)


def test_submit_after_divergence_writes_nothing(tmp_path, capsys):
    ws = workspace(tmp_path)
    code, _, err = run_cli(ws, capsys, "submit", "toy", "--lr", "1e30", "--epochs", "3")
    assert_one_line_error(code, err, "training diverged", "in the CV of mlp", "no model was saved", "lower lr")
    assert code == 3  # a training error
    assert not (ws / "submissions" / "toy.csv").exists()
    assert not (ws / "models" / "toy.pt").exists()
    assert not any((ws / "submissions").glob("*")) and not any((ws / "models").glob("*"))


# ----------------------------------------------------------------------------- checkpoints (item 6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A workspace after `pipeline submit toy --epochs 2` (preprocess, cv, train, submit)."""
    ws = workspace(tmp_path_factory.mktemp("trained"))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            main(["--workdir", str(ws), "submit", "toy", "--epochs", "2"])
    except SystemExit as exc:  # pragma: no cover - shows why the fixture failed
        raise AssertionError(f"submit exited {exc.code}: {err.getvalue().strip().splitlines()[-1]}") from None
    return ws


@pytest.fixture
def trained_copy(trained, tmp_path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(trained, ws)
    return ws


def loaded_weights(ws) -> list[float]:
    """The blend's weights its CV fit, one per member of the recipe."""
    return list(torch.load(ws / "data" / "toy" / "oof.pt", weights_only=True)["weights"])


def test_saved_model_loads_weights_only(trained):
    state = torch.load(trained / "models" / "toy.pt", weights_only=True)
    assert state["format"] == FORMAT
    assert state["target"] == "toy" and state["features"][:4] == ["Area", "Kind_a", "Kind_b", "Kind_<missing>"]
    assert state["features"][4:] and all(name.startswith("Area_knot") for name in state["features"][4:])
    model, loaded = load_model(trained / "models" / "toy.pt", METRICS["log_rmse"], torch.device("cpu"))
    assert [m.get("epochs") for m in loaded["params"]["ensemble"]] == [2, None, None]
    # the members the blend weighs (a member of weight 0 is not refit), weights summing to 1
    assert [m.label for m in model.members] == [m for m, w in zip(["mlp", "lightgbm", "glm"], loaded_weights(trained))
                                                if w > 0]
    assert sum(model.weights) == pytest.approx(1)
    lines = (trained / "submissions" / "toy.csv").read_text().splitlines()
    assert lines[0] == "Id,Price" and [line.split(",")[0] for line in lines[1:]] == ["13", "14", "15", "16"]


class _Planted:
    """Unpickling this object would create ``marker``: a stand-in for code run by a hostile pickle."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _tamper(kind: str, path: Path, marker: Path) -> None:
    if kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "plain-pickle":
        with open(path, "wb") as handle:
            pickle.dump({"format": FORMAT, "x": _Planted(marker)}, handle)
    elif kind == "torch-save-foreign":
        torch.save({"format": FORMAT, "x": _Planted(marker)}, path)
    elif kind == "no-format-key":
        torch.save({"theta": torch.zeros(3), "params": {}}, path)
    elif kind == "damaged":
        torch.save({"format": FORMAT}, path)
    else:  # pragma: no cover
        raise ValueError(kind)


def test_a_packed_estimator_naming_an_untrusted_function_is_refused(trained_copy, tmp_path):
    """scikit-learn parts travel through skops, which rebuilds only trusted types: a feature
    builder swapped for a transformer that would call os.system is refused before it is built."""
    import os

    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    path = trained_copy / "models" / "toy.pt"
    state = torch.load(path, weights_only=True)
    hostile = skops.io.dumps(FunctionTransformer(func=os.system))
    state["builder"] = torch.frombuffer(bytearray(hostile), dtype=torch.uint8)
    torch.save(state, path)
    with pytest.raises(DataError) as caught:
        load_model(path, METRICS["log_rmse"], torch.device("cpu"))
    assert "is damaged" in str(caught.value) and "does not trust" in str(caught.value)


def test_planted_pickle_runs_code_when_unpickled_unsafely(tmp_path):
    """The control for the next test: its hostile payload really would run code."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Planted(marker)))
    assert marker.exists()


@pytest.mark.parametrize("kind, needle", [
    ("random-bytes", "is not a pipeline checkpoint"),
    ("plain-pickle", "is not a pipeline checkpoint (UnpicklingError)"),
    ("torch-save-foreign", "is not a pipeline checkpoint (UnpicklingError)"),
    ("no-format-key", "is not a pipeline tabular model checkpoint"),
    ("damaged", "is damaged"),
])
def test_tampered_checkpoint_is_refused(trained_copy, tmp_path, capsys, kind, needle):
    ws, path, marker = trained_copy, trained_copy / "models" / "toy.pt", tmp_path / "ran"
    _tamper(kind, path, marker)
    with pytest.raises(DataError) as caught:
        load_model(path, METRICS["log_rmse"], torch.device("cpu"))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and needle in message
    assert not marker.exists(), "loading must not run code from the file"

    # A checkpoint replaced together with its lock record (as when copied from elsewhere): submit
    # trusts the lock, loads the file and must refuse it, leaving the old submission as it was.
    trust_model(ws, "toy", "models/toy.pt")
    before = (ws / "submissions" / "toy.csv").read_bytes()
    code, _, err = run_cli(ws, capsys, "submit", "toy", "--epochs", "2")
    assert_one_line_error(code, err, str(path), needle)
    assert code == 1 and not marker.exists()
    assert (ws / "submissions" / "toy.csv").read_bytes() == before


def test_tampered_checkpoint_with_stale_lock_is_retrained_not_loaded(trained_copy, tmp_path, capsys):
    """Without a matching lock record, submit sees the model as changed and retrains it first."""
    ws, path, marker = trained_copy, trained_copy / "models" / "toy.pt", tmp_path / "ran"
    _tamper("plain-pickle", path, marker)
    code, _, err = run_cli(ws, capsys, "submit", "toy", "--epochs", "2")
    assert code == 0, err
    assert "train: running (output models/toy.pt was changed)" in err
    assert not marker.exists()
    assert torch.load(path, weights_only=True)["format"] == FORMAT


def _start(ws: Path, *args: str) -> subprocess.Popen:
    """The real ``python -m pipeline --workdir WS ARGS``, as a terminal would run it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE_HOME", "PIPELINE_MIRROR")}
    return subprocess.Popen([sys.executable, "-m", "pipeline", "--workdir", str(ws), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_subprocess_prints_one_line_without_traceback(tmp_path, trained_copy):
    """A bad CSV (cv) and a tampered checkpoint (submit) through the real console command.

    Both commands run at once: each costs seconds of imports."""
    data = text(base_train_lines()).encode("utf-8")
    assert data.count(b"\n2,41,a,") == 1
    csv_ws = workspace(tmp_path / "csv", train=data.replace(b"\n2,41,a,", b"\n2,41,\xff\xfe,"))
    checkpoint = trained_copy / "models" / "toy.pt"
    _tamper("random-bytes", checkpoint, tmp_path / "ran")
    trust_model(trained_copy, "toy", "models/toy.pt")

    runs = [_start(csv_ws, *CV), _start(trained_copy, "submit", "toy", "--epochs", "2")]
    (csv_out, csv_err), (submit_out, submit_err) = [run.communicate(timeout=300) for run in runs]

    line = assert_one_line_error(runs[0].returncode, csv_err, "train.csv is not UTF-8 text", "line 3")
    assert runs[0].returncode == 1 and csv_out == ""
    assert line == f"pipeline: error: {assert_data_error(csv_ws)}"
    assert_one_line_error(runs[1].returncode, submit_err, str(checkpoint), "is not a pipeline checkpoint")
    assert runs[1].returncode == 1 and submit_out == ""


# ----------------------------------------------------------------------------- property-based (item 7)

CATEGORIES = ["red", "green", "dark blue", "x,y", 'say "hi"', "ü", "0", "2.5", "<missing>"]
UNSEEN = ["violet", "never seen"]
FLOATS = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf]),
                   st.floats(allow_nan=False, allow_infinity=False))
KINDS = ("int", "float", "text", "bool", "mixed")


def _column(draw, kind: str, n: int, test: bool) -> list:
    if kind == "int":
        elements = st.one_of(st.integers(-10**6, 10**6), st.none())
    elif kind == "float":
        elements = FLOATS
    elif kind == "bool":
        elements = st.one_of(st.booleans(), st.none())
    elif kind == "text" or (kind == "mixed" and test):
        elements = st.one_of(st.sampled_from(CATEGORIES + (UNSEEN if test else [])), st.none())
    else:  # mixed: numbers in train, text in test
        elements = st.one_of(st.integers(0, 9), st.none())
    return draw(st.lists(elements, min_size=n, max_size=n))


@st.composite
def random_tables(draw):
    n_train, n_test = draw(st.integers(2, 12)), draw(st.integers(1, 6))
    task = draw(st.sampled_from(["regression", "classification"]))
    metric = draw(st.sampled_from(["log_rmse", "rmse"])) if task == "regression" else "accuracy"
    train = {"Id": list(range(n_train))}
    test = {"Id": list(range(1000, 1000 + n_test))}
    for j, kind in enumerate(draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=5))):
        side = draw(st.sampled_from(["both"] * 6 + ["train", "test"]))
        if side != "test":
            train[f"{kind}{j}"] = _column(draw, kind, n_train, test=False)
        if side != "train":
            test[f"{kind}{j}"] = _column(draw, kind, n_test, test=True)
    if task == "regression":
        low = 1e-3 if metric == "log_rmse" else -1e6
        train["y"] = draw(st.lists(st.floats(low, 1e6), min_size=n_train, max_size=n_train))
    else:
        train["y"] = draw(st.lists(st.sampled_from(["cat", "dog", 3]), min_size=n_train, max_size=n_train))
    params = FeatureParams(fit_on=draw(st.sampled_from(["all", "train"])),
                           log_skewed=draw(st.sampled_from([0.0, 0.75])))
    return pd.DataFrame(train), pd.DataFrame(test), TableSpec("Id", "y", task, metric), params


def test_random_frames_give_finite_features_or_a_data_error():
    """Random dtypes, NaN, +-inf (treated as missing, with a warning), huge floats (a DataError
    naming the column), categories unseen in train: never any exception but a one-line DataError."""
    outcomes: Counter = Counter()

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(random_tables())
    def check(case):
        train, test, spec, params = case
        with tempfile.TemporaryDirectory() as folder:
            train.to_csv(Path(folder) / "train.csv", index=False)
            test.to_csv(Path(folder) / "test.csv", index=False)
            try:
                features = build_features(load_tables(Path(folder) / "train.csv", Path(folder) / "test.csv", spec),
                                          params)
            except DataError as exc:
                assert "\n" not in str(exc)
                outcomes["DataError"] += 1
                return
        outcomes["ok"] += 1
        assert features.X.dtype == features.X_test.dtype == torch.float32
        assert torch.isfinite(features.X).all() and torch.isfinite(features.X_test).all()
        assert features.X.shape == (len(train), len(features.names))
        assert features.X_test.shape == (len(test), len(features.names))
        assert len(features.y) == len(train) and features.test_ids == test["Id"].tolist()
        shared = set(train.columns) & set(test.columns) - {"Id", "y"}
        assert all(any(n == c or n.startswith((f"{c}_", f"{c}.")) for c in shared) for n in features.names)
        if not spec.scorer.task.continuous:
            assert features.y.dtype == torch.int64
            assert features.y.min() >= 0 and features.y.max() < len(features.classes)

    check()
    assert outcomes["ok"] >= 10, outcomes  # the property is not vacuous
