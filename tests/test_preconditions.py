"""Every metric against every task shape (issue 25): a CV either gives a finite score or ends in
a one-line error raised before training, never a traceback from deep in a library. Once, a
binary target with a single class in train was told to use logloss, and logloss then ended in
an 82-line LightGBM traceback."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings, strategies as st

from pipeline.api import Pipeline
from pipeline.errors import PipelineError
from pipeline.metrics import METRICS

FAMILIES = (None, "mlp", "lightgbm", "glm", "linear")  # None: the default recipe


@st.composite
def competitions(draw):
    """A tiny declared competition: 3 to 40 rows, a regression (values that may be zero or
    negative) or a classification of one to four classes, any metric, any member family."""
    rows = draw(st.integers(3, 40))
    classes = draw(st.sampled_from([0, 1, 2, 4]))  # 0: a regression
    r = np.random.default_rng(draw(st.integers(0, 2**16)))
    if classes:
        labels = [f"k{v}" for v in r.integers(0, classes, rows)]
    else:
        labels = np.round(r.normal(draw(st.sampled_from([0.0, 5.0])), 2, rows), 2).tolist()
    metric = draw(st.sampled_from(sorted(METRICS)))
    return rows, labels, "classification" if classes else "regression", metric, draw(st.sampled_from(FAMILIES))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(competitions())
def test_every_metric_and_task_shape_gives_a_score_or_a_one_line_error(tmp_path_factory, case):
    rows, labels, task, metric, family = case
    root = tmp_path_factory.mktemp("tiny")
    r = np.random.default_rng(rows)
    pd.DataFrame({"id": range(rows), "x": r.normal(size=rows), "size": r.choice(["S", "L"], rows),
                  "y": labels}).to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": range(rows, rows + 5), "x": r.normal(size=5), "size": ["S"] * 5}).to_csv(
        root / "test.csv", index=False)
    (root / "pipeline.toml").write_text(f'[target.tiny]\ntrain = "train.csv"\ntest = "test.csv"\nid = "id"\n'
                                        f'label = "y"\ntask = "{task}"\nmetric = "{metric}"\n')
    params = {"model": family, "epochs": 3} if family in ("mlp", "linear") else {"model": family} if family else {}
    try:
        report = Pipeline(root).cv("tiny", **params)
    except PipelineError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert math.isfinite(report["mean_valid"])
