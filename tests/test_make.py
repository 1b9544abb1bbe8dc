"""The make engine's code versions (issue 13, item 2; issue 29): editing a stage's code, which
is what its body imports, makes it stale.

Edits are simulated: :func:`helpers.edited` makes ``code_version`` read the package from a
temporary copy with a comment line added to a module; no real source file changes.
"""

from __future__ import annotations

import types

import pytest

from helpers import assert_edits_make_exactly_their_stages_stale, cli, edited, make_competition
from pipeline import code_graph, make
from pipeline.api import Pipeline
from pipeline.targets import FASHION, HOUSE


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A toy workspace after `pipeline run toy`: every stage up to date."""
    ws = make_competition(tmp_path_factory.mktemp("make") / "ws")
    (ws / "params.toml").write_text("[toy]\nepochs = 2\nbatch_size = 32\n")
    assert cli(ws, "run", "toy") == 0
    return ws


@pytest.fixture
def ctx(built):
    return Pipeline(built).context("toy")


def test_code_version_hashes_what_the_body_imports(ctx, monkeypatch, tmp_path):
    """cv's code: its module, what its body imports (tabular.cv) and what that imports in turn
    (tabular.infold, through cv and model); not what only other stages' bodies import."""
    stage = make.get_stage(ctx.target, "cv")
    before = make.code_version(stage, ctx.target)
    assert before == make.code_version(stage, ctx.target)  # stable
    for module in ("pipeline.tabular.stages", "pipeline.tabular.cv", "pipeline.tabular.infold"):
        with edited(monkeypatch, tmp_path, module):
            assert make.code_version(stage, ctx.target) != before, module
    with edited(monkeypatch, tmp_path, "pipeline.submissions"):  # submit's code, not cv's
        assert make.code_version(stage, ctx.target) == before
    assert make.code_version(stage, ctx.target) == before


def test_editing_the_stage_module_makes_every_tabular_stage_stale(ctx, monkeypatch, tmp_path):
    """Every tabular stage's body lives in pipeline/tabular/stages.py: an edit there makes each
    one stale with "code changed" on its own, and status shows the whole graph stale."""
    stages = ctx.target.stages
    assert {s.run.__module__ for s in stages} == {"pipeline.tabular.stages"}
    assert [row["state"] for row in make.status(ctx)] == ["up to date"] * len(stages)
    lock = make.read_lock(ctx.workspace)
    with edited(monkeypatch, tmp_path, "pipeline.tabular.stages"):
        assert [make.check(s, ctx, lock, set()) for s in stages] == [("stale", "code changed")] * len(stages)
        rows = make.status(ctx)
    assert [(r["stage"], r["state"]) for r in rows] == [(s.name, "stale") for s in stages]
    assert rows[0]["reason"] == "code changed"
    assert [r["reason"] for r in rows[1:]] == [f"upstream stage {s.after[0]} is not up to date" for s in stages[1:]]


def test_each_module_edit_makes_exactly_its_tabular_stages_stale(ctx, monkeypatch, tmp_path):
    assert_edits_make_exactly_their_stages_stale(ctx, monkeypatch, tmp_path)


def test_edited_stage_reruns_and_is_up_to_date_again(built, ctx, monkeypatch, tmp_path, capsys):
    """Under the simulated edit, `pipeline run` reruns cv, not the stages upstream of it."""
    stages = [s.name for s in ctx.target.stages]
    with edited(monkeypatch, tmp_path, "pipeline.folds"):  # cv's code, not download's or preprocess's
        capsys.readouterr()
        assert cli(built, "run", "toy") == 0
        err = capsys.readouterr().err
        assert "cv: running (code changed)" in err
        assert "download: up to date, skipped" in err and "preprocess: up to date, skipped" in err
        assert [row["state"] for row in make.status(ctx)] == ["up to date"] * len(stages)
    # the real file again differs from what the lock recorded
    assert make.status(ctx)[stages.index("cv")]["reason"] == "code changed"
    capsys.readouterr()
    assert cli(built, "run", "toy") == 0
    assert "cv: running (code changed)" in capsys.readouterr().err


def test_editing_the_trained_models_prediction_makes_submit_stale(ctx, monkeypatch, tmp_path):
    submit = make.get_stage(ctx.target, "submit")
    assert "predict" in submit.run.__code__.co_names
    with edited(monkeypatch, tmp_path, "pipeline.tabular.model"):
        assert make.check(submit, ctx, make.read_lock(ctx.workspace), set()) == ("stale", "code changed")


# ----------------------------------------------------------------------------- derived code vs called code

def called_modules(function) -> set[str]:
    """The pipeline modules a function names: imported modules, and the homes of the functions
    and classes it uses from its module's globals."""
    found = set()
    for name in function.__code__.co_names:
        value = function.__globals__.get(name)
        home = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        if isinstance(home, str) and home.startswith("pipeline"):
            found.add(home)
    return found


def _stage_cases():
    for target in (HOUSE, FASHION):
        for stage in target.stages:
            yield pytest.param(target, stage, id=f"{target.name}-{stage.name}")


def test_called_modules_sees_modules_and_imported_names():
    """The control for the next test: it finds what tabular cv's body calls."""
    cv = make.get_stage(HOUSE, "cv")
    assert {"pipeline.reports", "pipeline.checkpoints", "pipeline.tabular.cv", "pipeline.tabular.stages"} \
        <= called_modules(cv.run)


@pytest.mark.parametrize("target, stage", list(_stage_cases()))
def test_stage_code_covers_the_modules_its_body_calls(target, stage):
    """The code graph read from the source holds every module the body names at run time (its
    globals): none of them can change the stage's outputs without making it stale."""
    missing = called_modules(stage.run) - code_graph.code_modules(stage.run, target)
    assert not missing, f"{stage.name} calls {sorted(missing)}"
