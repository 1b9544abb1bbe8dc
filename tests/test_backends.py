"""Issue 16: sweeps and CVs on Ray give the local backend's results, survive a killed worker,
fail in one line naming the configs when retries run out, and write nothing then; Optuna's TPE
search resumes its study. The Ray tests share one local Ray with 2 CPUs (what CI has)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import assert_one_line_error, files_under, make_competition, run_cli
from pipeline import backends
from pipeline.errors import TrainingError
from pipeline.tabular.trainer import TrainParams

GRID = ["--grid", "lr=0.02,0.05", "--grid", "weight_decay=0,0.1"]


def _required(module: str):
    """The module, or a skip where the [scale] extra is absent (a failure under CI=true, which installs it)."""
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{module} is missing: .ci/run installs the [scale] extra")
        pytest.skip(f"{module} is not installed (pip install -e '.[scale]')")


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray for the module: the backend joins it instead of starting its own."""
    ray = _required("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def competition(tmp_path) -> Path:
    return make_competition(tmp_path / "ws", rows=160)


def _board(out: str) -> list[tuple[dict, float]]:
    report = json.loads(out)
    return [(row["params"], row["mean_valid"]) for row in report["leaderboard"]]


def _assert_same_board(first, second):
    assert [params for params, _ in first] == [params for params, _ in second]
    assert [score for _, score in first] == pytest.approx([score for _, score in second], rel=1e-5)


class DyingRay(backends.Ray):
    """Ray whose tasks SIGKILL their own worker process: only the first try of the run to start
    (``always=False``: a file created exclusively under ``marks`` elects it), or every try."""

    def __init__(self, marks: Path, always: bool, retries: int):
        super().__init__(retries=retries)
        self.marks, self.always = marks, always

    def map(self, function, shared, tasks, progress=backends.Progress()):
        marks, always = self.marks, self.always

        def dying(shared, *args):  # a closure, so Ray ships it by value to the workers
            marks.mkdir(exist_ok=True)
            try:
                os.close(os.open(marks / f"death-{os.getpid()}" if always else marks / "death",
                                 os.O_CREAT | os.O_EXCL))
                os.kill(os.getpid(), signal.SIGKILL)
            except FileExistsError:  # another try died already: this one trains
                pass
            return function(shared, *args)

        return super().map(dying, shared, tasks, progress)


# ----------------------------------------------------------------------------- without the extra


def test_backend_ray_without_ray_says_how_to_install(competition, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code, _, err = run_cli(competition, capsys, "sweep", "toy", *GRID, "--backend", "ray")
    assert_one_line_error(code, err, "--backend 'ray'", 'pip install -e ".[scale]"')
    assert code == 2
    assert not (competition / "reports").exists() and not (competition / "data").exists()


def test_unknown_backend_is_refused_before_any_work(competition, capsys):
    code, _, err = run_cli(competition, capsys, "cv", "toy", "--backend", "spark")
    assert_one_line_error(code, err, "'spark'", "local, ray")
    assert not (competition / "data").exists()


def test_a_cluster_address_where_nothing_listens_is_one_line_naming_it(competition, capsys):
    """Issue 25: Ray itself retried such an address for over 300 s, repeating its warnings."""
    _required("ray")
    code, _, err = run_cli(competition, capsys, "cv", "toy", "--backend", "ray", "--address", "127.0.0.1:1")
    assert_one_line_error(code, err, "--address '127.0.0.1:1'", "no Ray cluster answers there")
    assert not (competition / "data").exists()


def test_sweep_tasks_split_a_group_over_the_workers_and_keep_groups_apart():
    from pipeline.tabular.cv import sweep_tasks
    from pipeline.tabular.trainer import TrainParams

    configs = [TrainParams(lr=lr) for lr in (0.1, 0.2, 0.3, 0.4, 0.5)] + [TrainParams(batch_size=16)]
    tasks, positions = sweep_tasks(configs, workers=2)
    assert positions == [[0, 1, 2], [3, 4], [5]]  # batch size is in the group key: its own stack
    assert [[configs.index(c) for c in task.args[0]] for task in tasks] == positions
    assert sweep_tasks(configs, workers=1)[1] == [[0, 1, 2, 3, 4], [5]]


class SplitLocal(backends.Local):
    """The local backend as a 3-CPU cluster would split a sweep: tasks of a few configs each."""

    workers = 3


def test_a_config_trains_the_same_whatever_it_is_stacked_with(tmp_path):
    """Two hidden layers, dropout, submodels and configs of different widths: splitting the
    stack into tasks (as on Ray) changes no config's initial weights, masks or scores."""
    import torch

    from pipeline.tabular.cv import cross_validate
    from pipeline.tabular.recipe import FoldParams
    from pipeline.tabular.features import build_features
    from pipeline.tabular.tables import TableSpec, load_tables

    folder = make_competition(tmp_path / "toy", rows=120)
    features = build_features(load_tables(folder / "train.csv", folder / "test.csv",
                                          TableSpec("key", "price", metric="log_rmse")))
    base = TrainParams(model="mlp", epochs=3, batch_size=32, lr=0.01, submodels=2, log_target=True)
    configs = [base.with_(hidden=hidden, dropout=dropout) for hidden in ([16, 16], [8, 24])
               for dropout in (0.1, 0.3)] + [base.with_(hidden=[32, 8], dropout=0.2)]
    whole = cross_validate(features, configs, FoldParams(3), device=torch.device("cpu"), curves=False)
    split = cross_validate(features, configs, FoldParams(3), device=torch.device("cpu"), curves=False,
                           backend=SplitLocal())
    for ours, theirs in zip(whole.scores, split.scores):
        assert ours.valid == pytest.approx(theirs.valid, rel=1e-5), ours.params



def test_a_configs_score_does_not_depend_on_its_place_in_the_sweep(tmp_path):
    """Every config gets the same random draws (as a grid search's one random_state): reordering
    a sweep, or adding configs to it, leaves each config's fold scores as they were."""
    import torch

    from pipeline.tabular.cv import cross_validate
    from pipeline.tabular.recipe import FoldParams
    from pipeline.tabular.features import build_features
    from pipeline.tabular.tables import TableSpec, load_tables

    folder = make_competition(tmp_path / "toy", rows=120)
    features = build_features(load_tables(folder / "train.csv", folder / "test.csv",
                                          TableSpec("key", "price", metric="log_rmse")))
    base = TrainParams(model="mlp", hidden=[16], epochs=3, batch_size=32, dropout=0.2, log_target=True)
    a, b, c = base.with_(lr=0.01), base.with_(lr=0.03), base.with_(lr=0.003)
    first = cross_validate(features, [a, b], FoldParams(3), device=torch.device("cpu"), curves=False).scores
    later = cross_validate(features, [c, b, a], FoldParams(3), device=torch.device("cpu"), curves=False).scores
    assert later[2].valid == pytest.approx(first[0].valid, rel=1e-5)
    assert later[1].valid == pytest.approx(first[1].valid, rel=1e-5)


# ----------------------------------------------------------------------------- on Ray


def test_ray_sweep_gives_the_local_leaderboard(ray_instance, competition, capsys):
    code, local, err = run_cli(competition, capsys, "sweep", "toy", *GRID, "--no-save", "--json")
    assert code == 0, err
    code, on_ray, err = run_cli(competition, capsys, "sweep", "toy", *GRID, "--no-save", "--json",
                                "--backend", "ray")
    assert code == 0, err
    assert len(_board(local)) == 4
    _assert_same_board(_board(local), _board(on_ray))
    assert json.loads(on_ray)["backend"] == "ray"
    assert ray_instance.is_initialized()  # a Ray it joined is left running


def test_ray_recipe_cv_gives_the_local_scores(ray_instance, competition, capsys):
    runs = []
    for backend in ("local", "ray"):
        code, out, err = run_cli(competition, capsys, "cv", "toy", "--json", "--backend", backend)
        assert code == 0, err
        runs.append(json.loads(out))
    local, on_ray = runs
    assert [m["model"] for m in local["members"]] == [m["model"] for m in on_ray["members"]]
    assert len(local["members"]) >= 2
    for ours, theirs in zip(local["members"], on_ray["members"]):
        assert ours["valid"] == pytest.approx(theirs["valid"], rel=1e-5), ours["model"]
    assert local["mean_valid"] == pytest.approx(on_ray["mean_valid"], rel=1e-5)


def test_fold_models_kept_on_ray_submit_as_the_local_ones(ray_instance, tmp_path, capsys):
    """final = "folds": the fold models come back from Ray's workers with their runs, and the
    submission they make is the local one."""
    submissions = []
    for backend in ("local", "ray"):
        ws = make_competition(tmp_path / backend, rows=160)
        code, _, err = run_cli(ws, capsys, "cv", "toy", "--final", "folds", "--backend", backend)
        assert code == 0, err
        code, _, err = run_cli(ws, capsys, "submit", "toy", "--final", "folds")
        assert code == 0 and "cv: up to date, skipped" in err, err
        submissions.append(pd.read_csv(ws / "submissions" / "toy.csv"))
    local, on_ray = submissions
    np.testing.assert_allclose(on_ray["price"], local["price"], rtol=1e-5)


def test_a_killed_worker_is_retried_and_the_sweep_completes(ray_instance, competition, capsys, monkeypatch,
                                                            tmp_path):
    code, local, err = run_cli(competition, capsys, "sweep", "toy", *GRID, "--no-save", "--json")
    assert code == 0, err
    marks = tmp_path / "deaths"
    monkeypatch.setattr(backends, "backend", lambda name, address=None: DyingRay(marks, always=False, retries=2))
    code, on_ray, err = run_cli(competition, capsys, "sweep", "toy", *GRID, "--no-save", "--json",
                                "--backend", "ray")
    assert code == 0, err
    assert len(list(marks.iterdir())) == 1  # one worker did die
    _assert_same_board(_board(local), _board(on_ray))


def test_retries_run_out_one_line_naming_the_configs_and_nothing_written(ray_instance, competition, capsys,
                                                                         monkeypatch, tmp_path):
    params_before = (competition / "params.toml").read_text()
    code, _, err = run_cli(competition, capsys, "preprocess", "toy")
    assert code == 0, err
    before = files_under(competition)
    monkeypatch.setattr(backends, "backend",
                        lambda name, address=None: DyingRay(tmp_path / "deaths", always=True, retries=1))
    code, _, err = run_cli(competition, capsys, "sweep", "toy", *GRID, "--backend", "ray")
    line = assert_one_line_error(code, err, "Ray tasks failed after 1 retries", "lr=0.02", "lr=0.05",
                                 "nothing was saved")
    assert "weight_decay=0.1" in line
    assert (competition / "params.toml").read_text() == params_before
    assert files_under(competition) == before  # no report, no half-written file


def test_a_task_that_raises_is_not_retried_and_keeps_its_message(ray_instance, tmp_path):
    tries = tmp_path / "tries"
    tries.mkdir()

    def refuses(shared, label, progress):
        (tries / f"{os.getpid()}-{len(list(tries.iterdir()))}").touch()
        raise TrainingError(f"{label}: diverged")

    with backends.Ray(retries=3) as ray:
        with pytest.raises(TrainingError, match="^b: diverged$"):
            ray.map(refuses, None, [backends.Task("b", ("b",))])
    assert len(list(tries.iterdir())) == 1  # a bad param or a bug is not a dead worker: no retry


# ----------------------------------------------------------------------------- TPE


def test_tpe_search_trains_batches_saves_the_best_and_resumes(competition, capsys):
    _required("optuna")
    search = ["sweep", "toy", "--search", "tpe", "--range", "lr=1e-3..1e-1:log", "--range", "weight_decay=0.001..0.3",
              "--batch", "3", "--json"]
    code, out, err = run_cli(competition, capsys, *search, "--trials", "6")
    assert code == 0, err
    first = json.loads(out)
    assert first["search"] == "tpe" and len(first["leaderboard"]) == 6
    scores = [row["mean_valid"] for row in first["leaderboard"]]
    assert scores == sorted(scores)  # log-RMSE: best (lowest) first
    best = first["leaderboard"][0]["params"]
    saved = (competition / "params.toml").read_text()
    assert f"lr = {best['lr']}" in saved and f"weight_decay = {best['weight_decay']}" in saved
    assert (competition / "reports" / "search.sqlite3").exists()

    code, out, err = run_cli(competition, capsys, *search, "--trials", "3")
    assert code == 0, err
    resumed = json.loads(out)["leaderboard"]
    assert len(resumed) == 9  # the study kept the first six trials
    assert {row["trial"] for row in resumed} == set(range(9))
    first_lrs = {row["params"]["lr"] for row in first["leaderboard"]}
    assert len({row["params"]["lr"] for row in resumed} - first_lrs) == 3  # new proposals, not repeats


@pytest.mark.parametrize("item, needle", [
    ("lr=1e-1..1e-4", "LOW < HIGH"),
    ("lr=0..0.1:log", "LOW > 0"),
    ("lr:1e-4..1e-1", "NAME=LOW..HIGH"),
    ("model=1..2", "'model' is not a numeric param"),
    ("epochs=5..x", "'x'"),
])
def test_bad_ranges_are_one_line_errors_before_any_work(competition, capsys, item, needle):
    _required("optuna")
    code, _, err = run_cli(competition, capsys, "sweep", "toy", "--search", "tpe", "--range", item)
    assert_one_line_error(code, err, item, needle)
    assert not (competition / "data").exists()


def test_a_grid_sweep_refuses_ranges_and_needs_a_grid(competition, capsys):
    for args in (["--range", "lr=0.01..0.1"], []):
        code, _, err = run_cli(competition, capsys, "sweep", "toy", *args)
        assert_one_line_error(code, err, "--grid", "a grid sweep takes a grid (NAME=V1,V2)")
    assert not (competition / "data").exists()
