"""The model families' conformance suite (issue 30), generated from the registry: every family
in ``pipeline.tabular.members.FAMILIES`` is checked here with no test written for it, as
scikit-learn checks every estimator with ``parametrize_with_checks``. Each family is built
with the settings a declared target gives it (``--model NAME``), on every task shape:

- a task it does not learn is refused in one line; on the others it fits three row sets and
  predicts (3, rows, outputs) float32, finite, probabilities summing to 1;
- its saved state (``torch.load(weights_only=True)``) predicts exactly as the fitted member;
- the same seed gives the same predictions, and several seeds still predict one model per row set;
- a deadline that has passed is refused, and one that comes early is obeyed (cut or shortened);
- an unknown param, and a param given a word where it takes a number, are one-line errors.
"""

from __future__ import annotations

import functools
import itertools
import os

import pytest
import torch

from pipeline.errors import PipelineError, UsageError
from pipeline.tabular.budget import OutOfTime
from pipeline.tabular.members import FAMILIES, build, declared, load_fitted
from pipeline.tabular.presets import DECLARED_FAMILIES
from pipeline.tasks import TASKS as TASK_OBJECTS
from test_members import CPU, TASKS, _one_thread, data_for, round_trip, three_folds  # noqa: F401  (autouse)


def member(family: str, **values):
    settings = {k: v for k, v in DECLARED_FAMILIES.get(family, {}).items() if k in declared(family)}
    return build(family, {**settings, **values})


def learns(family: str, kind: str) -> bool:
    return member(family).supports(TASK_OBJECTS[TASKS[kind][0]])


@pytest.fixture(autouse=True)
def _installed(request):
    """A family whose optional library is missing (CatBoost without the [best] extra) skips,
    and fails under CI=true, which installs every extra."""
    callspec = getattr(request.node, "callspec", None)
    family = callspec.params.get("family") if callspec else None
    missing = family and member(family).missing()
    if missing:
        message = f"model {family} is not installed ({missing})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true requires it)")
        pytest.skip(message)


CASES = [(family, kind) for family in sorted(FAMILIES) for kind in sorted(TASKS)]
LEARNED = [(family, kind) for family, kind in CASES if learns(family, kind)]


@functools.cache
def fitted(family: str, kind: str, seeds: int = 1, seed: int = 0):
    data = data_for(kind)
    train, valid = three_folds(data.features)
    return member(family).fit(data, train, valid_rows=valid, seeds=seeds, seed=seed)


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize("family, kind", CASES)
def test_it_fits_three_row_sets_and_predicts_their_outputs(family, kind):
    data = data_for(kind)
    if not learns(family, kind):
        with pytest.raises(UsageError) as caught:
            member(family).fit(data, three_folds(data.features)[0])
        assert data.task.name in one_line(caught.value)
        return
    predicted = fitted(family, kind)
    assert predicted.label == family and len(predicted.report.failed_epoch) == 3
    for inputs in (data.train, data.test):
        values = predicted.predict(inputs)
        assert values.shape == (3, len(inputs), data.n_out) and values.dtype == torch.float32
        assert torch.isfinite(values).all()
        if not data.task.continuous:
            assert ((values >= 0) & (values <= 1)).all()
            torch.testing.assert_close(values.sum(-1), torch.ones(3, len(inputs)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family, kind", LEARNED)
def test_its_saved_state_predicts_as_it_does(family, kind, tmp_path):
    data, predicted = data_for(kind), fitted(family, kind)
    loaded = load_fitted(round_trip(predicted.state(), tmp_path), data.metric, CPU)
    assert loaded.label == predicted.label
    for inputs in (data.train, data.test):
        torch.testing.assert_close(loaded.predict(inputs), predicted.predict(inputs), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_seed_gives_the_same_models_and_seeds_average_several(family):
    kind = next(k for k in sorted(TASKS) if learns(family, k))
    data = data_for(kind)
    again = member(family).fit(data, three_folds(data.features)[0], valid_rows=three_folds(data.features)[1])
    torch.testing.assert_close(again.predict(data.test), fitted(family, kind).predict(data.test))
    several = fitted(family, kind, seeds=2).predict(data.test)
    assert several.shape == (3, len(data.test), data.n_out) and torch.isfinite(several).all()


@pytest.fixture
def ticking(monkeypatch):
    """A clock that moves on one second each time anything reads it."""
    clock = itertools.count(1000)
    monkeypatch.setattr("time.monotonic", lambda: float(next(clock)))
    return clock


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_it_keeps_to_a_deadline(family, ticking):
    kind = next(k for k in sorted(TASKS) if learns(family, k))
    data = data_for(kind)
    train, valid = three_folds(data.features)
    with pytest.raises(OutOfTime, match="no time was left"):
        member(family).fit(data, train, valid_rows=valid, deadline=next(ticking) - 1)
    try:  # a few (fake) seconds: each read of the clock takes one
        shortened = member(family).fit(data, train, valid_rows=valid, deadline=next(ticking) + 3)
    except OutOfTime as cut:
        assert one_line(cut)
    else:
        assert shortened.report.shortened, f"{family} trained past its deadline without saying so"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_bad_param_is_a_one_line_error(family):
    with pytest.raises(UsageError) as caught:
        member(family, no_such_param=1)
    assert "no_such_param" in one_line(caught.value)
    numeric = next(name for name, value in declared(family).items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool))
    kind = next(k for k in sorted(TASKS) if learns(family, k))
    data = data_for(kind)
    with pytest.raises(PipelineError) as caught:  # refused when built, or by the library before it trains
        member(family, **{numeric: "banana"}).fit(data, three_folds(data.features)[0])
    assert numeric in one_line(caught.value)
